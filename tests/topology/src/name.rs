//! Namespace names: `shl<pid>x<topology><role><index>`.
//!
//! Network namespace names live in one directory shared by every process on the
//! machine, and several test binaries (and several tests inside each) build
//! topologies at the same time. Putting the creating process's id and a per-process
//! counter in the name keeps them apart without any coordination; putting the pid
//! first also lets a later run tell a namespace left by a crashed run (its pid is
//! gone) from one that is still in use. The parser is strict, so the sweeper never
//! mistakes a namespace made by someone else for one of ours.

use std::fmt;

/// Every namespace name this crate makes starts with this.
pub const NAME_PREFIX: &str = "shl";

/// What a namespace stands for in a topology; one letter of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The namespace holding the underlay bridge `br0` (letter `b`).
    Bridge,
    /// A swarm node (letter `n`).
    Node,
    /// A client outside the swarm, on the same underlay (letter `c`).
    Client,
    /// A bare namespace with only `lo`, standing in for a task (letter `t`).
    Task,
}

impl Role {
    /// The letter used in namespace names.
    pub fn letter(self) -> char {
        match self {
            Role::Bridge => 'b',
            Role::Node => 'n',
            Role::Client => 'c',
            Role::Task => 't',
        }
    }

    /// The role a name letter stands for, if any.
    pub fn from_letter(letter: char) -> Option<Role> {
        match letter {
            'b' => Some(Role::Bridge),
            'n' => Some(Role::Node),
            'c' => Some(Role::Client),
            't' => Some(Role::Task),
            _ => None,
        }
    }
}

/// The parts of a namespace name made by this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsName {
    /// The id of the process that made the namespace.
    pub pid: u32,
    /// Which topology of that process (a per-process counter).
    pub topology: u64,
    /// What the namespace stands for.
    pub role: Role,
    /// Its index among the namespaces of that role in the topology.
    pub index: u32,
}

impl NsName {
    /// Parses a name made by [`NsName`]'s `Display`; `None` for anything else.
    ///
    /// Strict on purpose: decimal digits only, no sign, no leading zeros, pid at
    /// least 1, nothing after the index. A namespace whose name does not parse is
    /// never touched by the sweeper.
    pub fn parse(name: &str) -> Option<NsName> {
        let rest = name.strip_prefix(NAME_PREFIX)?;
        let (pid, rest) = take_number(rest)?;
        let rest = rest.strip_prefix('x')?;
        let (topology, rest) = take_number(rest)?;
        let mut chars = rest.chars();
        let role = Role::from_letter(chars.next()?)?;
        let (index, rest) = take_number(chars.as_str())?;
        if !rest.is_empty() {
            return None;
        }
        let pid = u32::try_from(pid).ok().filter(|&p| p > 0)?;
        let index = u32::try_from(index).ok()?;
        Some(NsName {
            pid,
            topology,
            role,
            index,
        })
    }
}

impl fmt::Display for NsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{NAME_PREFIX}{}x{}{}{}",
            self.pid,
            self.topology,
            self.role.letter(),
            self.index
        )
    }
}

/// Splits a leading canonical decimal number (no leading zeros) off `s`.
fn take_number(s: &str) -> Option<(u64, &str)> {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    let digits = &s[..len];
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    Some((digits.parse().ok()?, &s[len..]))
}

/// The name of the veth end that stays in the bridge namespace for the host of
/// `role` and `index`: `vn0`, `vc12`. Interface names are limited to 15 bytes;
/// these are unique within the bridge namespace, which is all they need to be.
pub fn bridge_port_name(role: Role, index: u32) -> String {
    format!("v{}{index}", role.letter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(pid: u32, topology: u64, role: Role, index: u32) -> NsName {
        NsName {
            pid,
            topology,
            role,
            index,
        }
    }

    #[test]
    fn names_round_trip() {
        for role in [Role::Bridge, Role::Node, Role::Client, Role::Task] {
            let n = name(4_194_304, 17, role, 3);
            assert_eq!(NsName::parse(&n.to_string()), Some(n));
        }
        assert_eq!(name(1234, 0, Role::Node, 2).to_string(), "shl1234x0n2");
    }

    #[test]
    fn foreign_names_are_refused() {
        for foreign in [
            "",
            "shl",
            "shl1234",
            "shl1234x",
            "shl1234x0",
            "shl1234x0n",
            "shl1234x0q1",
            "shl1234x0n1 ",
            "shl1234x0n1b",
            "shl1234x0n1-mine",
            "shl1234y0n1",
            "shl01234x0n1",
            "shl1234x00n1",
            "shl1234x0n01",
            "shl+1234x0n1",
            "shl1234x+0n1",
            "shl0x0n1",
            "shl99999999999x0n1",
            "SHL1234x0n1",
            "xshl1234x0n1",
            "shlabcx0n1",
            "shl１２x0n1",
            "docker-ns",
        ] {
            assert_eq!(NsName::parse(foreign), None, "{foreign:?} parsed");
        }
    }

    #[test]
    fn zero_counter_and_index_are_canonical() {
        assert_eq!(NsName::parse("shl7x0t0"), Some(name(7, 0, Role::Task, 0)));
    }

    #[test]
    fn bridge_ports_fit_interface_names() {
        let longest = bridge_port_name(Role::Client, u32::MAX);
        assert!(longest.len() <= 15, "{longest}");
        assert_eq!(bridge_port_name(Role::Node, 0), "vn0");
    }
}

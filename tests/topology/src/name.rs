//! Namespace names: `shl<pid>x<topology><role><index>`, or `<prefix>-<role><n>`
//! for topologies that outlive their process.
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

/// The name of a namespace of a topology built with fixed names
/// ([`crate::TopologyBuilder::fixed_names`]): `<prefix>-br` for the bridge,
/// `<prefix>-n1`, `<prefix>-c1`, `<prefix>-t1` for the others, counted from 1
/// the way people count hosts (`node1` is in `<prefix>-n1`).
///
/// Such names always hold a `-`, which [`NsName::parse`] never accepts, so the
/// stale-namespace sweeper cannot take them for orphans of a dead process:
/// they are removed only by whoever asks for it ([`crate::teardown`]).
pub fn fixed_name(prefix: &str, role: Role, index: u32) -> String {
    match role {
        Role::Bridge => format!("{prefix}-br"),
        _ => format!("{prefix}-{}{}", role.letter(), u64::from(index) + 1),
    }
}

/// The role and 0-based index of `name` if it is [`fixed_name`] of `prefix`;
/// `None` for anything else, including the names of other prefixes that
/// `prefix` happens to begin (`lab-a` and `lab-a-b`).
pub fn parse_fixed(prefix: &str, name: &str) -> Option<(Role, u32)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    if rest == "br" {
        return Some((Role::Bridge, 0));
    }
    let mut chars = rest.chars();
    let role = Role::from_letter(chars.next()?).filter(|r| *r != Role::Bridge)?;
    let (n, tail) = take_number(chars.as_str())?;
    if !tail.is_empty() || n == 0 {
        return None;
    }
    Some((role, u32::try_from(n - 1).ok()?))
}

/// Checks a prefix for [`fixed_name`]: 1 to 48 bytes of ASCII letters, digits,
/// `-`, `_` and `.`, starting with a letter or digit.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if prefix.is_empty() || prefix.len() > 48 {
        return Err(format!("is {} bytes long; use 1 to 48", prefix.len()));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) || !prefix.chars().all(ok_char) {
        return Err(format!(
            "is {prefix:?}; use ASCII letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
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
    fn fixed_names_round_trip_and_are_never_taken_for_ours() {
        for (role, index, name) in [
            (Role::Bridge, 0, "shoal-lab-a-br"),
            (Role::Node, 0, "shoal-lab-a-n1"),
            (Role::Node, 9, "shoal-lab-a-n10"),
            (Role::Client, 1, "shoal-lab-a-c2"),
            (Role::Task, 2, "shoal-lab-a-t3"),
        ] {
            assert_eq!(fixed_name("shoal-lab-a", role, index), name);
            assert_eq!(parse_fixed("shoal-lab-a", name), Some((role, index)));
            // The sweeper only ever removes names that parse as ours.
            assert_eq!(NsName::parse(name), None, "{name}");
        }
        // A prefix that looks like our process names still yields a `-`.
        assert_eq!(NsName::parse(&fixed_name("shl1x0", Role::Node, 0)), None);
    }

    #[test]
    fn fixed_names_of_other_prefixes_are_not_claimed() {
        for other in [
            "shoal-lab-a-b-n1",
            "shoal-lab-a-n1-n1",
            "shoal-lab-a-n0",
            "shoal-lab-a-n01",
            "shoal-lab-a-b1",
            "shoal-lab-a-n1x",
            "shoal-lab-a",
            "shoal-lab-ab-n1",
        ] {
            assert_eq!(parse_fixed("shoal-lab-a", other), None, "{other}");
        }
        assert!(check_prefix("shoal-lab-a_b.c").is_ok());
        for bad in ["", "-a", "a/b", "a b", &"x".repeat(49)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bridge_ports_fit_interface_names() {
        let longest = bridge_port_name(Role::Client, u32::MAX);
        assert!(longest.len() <= 15, "{longest}");
        assert_eq!(bridge_port_name(Role::Node, 0), "vn0");
    }
}

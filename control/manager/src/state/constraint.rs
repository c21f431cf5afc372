//! Placement constraints (`--constraint 'node.role==worker'`).
//!
//! A constraint is kept parsed in the state and written as the user wrote
//! it in JSON (`node.labels.zone==a`), like Docker's spec. Matching follows
//! swarmkit: keys and values compare without regard to case, except label
//! keys, which are taken as given.

use serde::{Deserialize, Serialize};

use super::Node;

/// What a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConstraintKey {
    /// `node.id`.
    NodeId,
    /// `node.hostname`.
    Hostname,
    /// `node.role`.
    Role,
    /// `node.labels.KEY`.
    Label(String),
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintOp {
    /// Must equal.
    Eq,
    /// Must not equal.
    Ne,
}

/// One placement constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Constraint {
    /// What it looks at.
    pub key: ConstraintKey,
    /// How it compares.
    pub op: ConstraintOp,
    /// What it compares with.
    pub value: String,
}

impl std::str::FromStr for Constraint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, op, value) = if let Some((k, v)) = s.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = s.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(format!(
                "invalid constraint {s:?}: use KEY==VALUE or KEY!=VALUE (node.role==worker)"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() || value.contains("==") || value.contains("!=") {
            return Err(format!(
                "invalid constraint {s:?}: the value is missing or malformed"
            ));
        }
        let lower = key.to_ascii_lowercase();
        let key = match lower.as_str() {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::Hostname,
            "node.role" => {
                if !value.eq_ignore_ascii_case("manager") && !value.eq_ignore_ascii_case("worker") {
                    return Err(format!(
                        "invalid constraint {s:?}: node.role is manager or worker"
                    ));
                }
                ConstraintKey::Role
            }
            _ if lower.starts_with("node.labels.") && key.len() > "node.labels.".len() => {
                ConstraintKey::Label(key["node.labels.".len()..].to_string())
            }
            _ => {
                return Err(format!(
                    "invalid constraint {s:?}: shoal knows node.id, node.hostname, node.role and node.labels.KEY, not {key:?}"
                ))
            }
        };
        Ok(Constraint {
            key,
            op,
            value: value.to_string(),
        })
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            ConstraintKey::NodeId => f.write_str("node.id")?,
            ConstraintKey::Hostname => f.write_str("node.hostname")?,
            ConstraintKey::Role => f.write_str("node.role")?,
            ConstraintKey::Label(k) => write!(f, "node.labels.{k}")?,
        }
        f.write_str(match self.op {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        })?;
        f.write_str(&self.value)
    }
}

impl TryFrom<String> for Constraint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        c.to_string()
    }
}

impl Constraint {
    /// Whether `node` satisfies it. A label the node does not have is not
    /// equal to anything (so `!=` holds), as in swarmkit.
    pub fn matches(&self, node: &Node) -> bool {
        let role = node.role.to_string();
        let actual: Option<&str> = match &self.key {
            ConstraintKey::NodeId => Some(&node.id),
            ConstraintKey::Hostname => Some(&node.hostname),
            ConstraintKey::Role => Some(&role),
            ConstraintKey::Label(k) => node.labels.get(k).map(String::as_str),
        };
        let equal = actual.is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        match self.op {
            ConstraintOp::Eq => equal,
            ConstraintOp::Ne => !equal,
        }
    }
}

/// Whether `node` satisfies every constraint.
pub fn all_match(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Availability, NodeStatus, Role};
    use std::collections::BTreeMap;

    fn node() -> Node {
        Node {
            id: "n1abc".into(),
            hostname: "node1".into(),
            role: Role::Worker,
            availability: Availability::Active,
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            addr: "10.0.0.1".parse().unwrap(),
            api_addr: None,
            raft_id: None,
            status: NodeStatus::Ready,
            status_message: String::new(),
            created_at: 0,
            updated_at: 0,
            version: 1,
            ingress_ip: None,
            engine: None,
        }
    }

    #[test]
    fn constraints_parse_print_and_match() {
        let n = node();
        for (text, matches) in [
            ("node.role==worker", true),
            ("node.role==manager", false),
            ("node.role != manager", true),
            ("node.labels.zone==a", true),
            ("node.labels.zone!=a", false),
            ("node.labels.rack==1", false),
            ("node.labels.rack!=1", true),
            ("node.hostname!=node1", false),
            ("node.hostname==NODE1", true),
            ("node.id==n1abc", true),
        ] {
            let c: Constraint = text.parse().unwrap();
            assert_eq!(c.matches(&n), matches, "{text}");
            let again: Constraint = c.to_string().parse().unwrap();
            assert_eq!(again, c);
        }
        let json =
            serde_json::to_string(&"node.labels.zone==a".parse::<Constraint>().unwrap()).unwrap();
        assert_eq!(json, "\"node.labels.zone==a\"");
    }

    #[test]
    fn bad_constraints_are_named() {
        for (text, words) in [
            ("node.role=worker", "use KEY==VALUE"),
            ("node.role==boss", "node.role is manager or worker"),
            ("node.color==red", "not \"node.color\""),
            ("node.labels.==x", "not \"node.labels.\""),
            ("node.id==", "value is missing"),
        ] {
            let e = text.parse::<Constraint>().unwrap_err();
            assert!(e.contains(&format!("{text:?}")), "{e}");
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}

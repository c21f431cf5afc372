//! Parsers for the values of flags that several commands share, so that a
//! bad value is refused at the edge with a message naming it.

use std::collections::BTreeMap;

use ipnet::{IpNet, Ipv4Net};

/// Parses an IPv4 network in CIDR notation (`10.0.9.0/24`). Host bits are
/// the manager's to judge: it names the network that was probably meant.
pub fn ipv4_cidr(s: &str) -> Result<Ipv4Net, String> {
    match s.parse::<IpNet>() {
        Ok(IpNet::V4(n)) => Ok(n),
        Ok(IpNet::V6(_)) => Err(format!(
            "{s:?} is an IPv6 network; shoal's overlay networks are IPv4 only"
        )),
        Err(_) => Err(format!(
            "{s:?} is not a network in CIDR notation (an IPv4 address, '/', a prefix length: 10.0.9.0/24)"
        )),
    }
}

/// Parses `--label KEY=VALUE` flags (`KEY` alone is an empty value, as in
/// Docker). Keys are checked by the manager.
pub fn labels(flags: &[String]) -> BTreeMap<String, String> {
    flags
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_parsed_and_bad_ones_are_named() {
        assert_eq!(ipv4_cidr("10.0.9.0/24").unwrap().to_string(), "10.0.9.0/24");
        let e = ipv4_cidr("10.0.9/24").unwrap_err();
        assert!(
            e.contains("\"10.0.9/24\" is not a network in CIDR notation"),
            "{e}"
        );
        let e = ipv4_cidr("10.0.9.0").unwrap_err();
        assert!(e.contains("\"10.0.9.0\""), "{e}");
        let e = ipv4_cidr("fd00::/64").unwrap_err();
        assert!(e.contains("IPv6"), "{e}");
    }

    #[test]
    fn labels_take_an_optional_value() {
        let l = labels(&["a=1".into(), "b".into(), "c=x=y".into()]);
        assert_eq!(l["a"], "1");
        assert_eq!(l["b"], "");
        assert_eq!(l["c"], "x=y");
    }
}

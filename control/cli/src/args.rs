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

/// Parses a duration the way Docker's `--cert-expiry` is written (a Go
/// duration of hours, minutes and seconds: `2160h`, `2160h0m0s`, `1h30m`,
/// `90m`, `45s`) into seconds. Days and other units are refused by name,
/// because Docker refuses them too and a silent guess could shorten the
/// certificates of a whole swarm. Whether it is long enough is shoald's call.
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("invalid duration {s:?}: {why}; write it in hours, minutes and seconds like 2160h, 1h30m or 90m0s")
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit = 0usize;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, secs) = match c {
            'h' => (1, 3600),
            'm' => (2, 60),
            's' => (3, 1),
            other => return Err(bad(&format!("{other:?} is not a unit (use h, m or s)"))),
        };
        if digits.is_empty() {
            return Err(bad(&format!("a number must come before {c:?}")));
        }
        if rank <= last_unit {
            return Err(bad("each of h, m and s may appear once, in that order"));
        }
        let n: u64 = digits.parse().map_err(|_| bad("the number is too large"))?;
        total = n
            .checked_mul(secs)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| bad("it is too long"))?;
        digits.clear();
        last_unit = rank;
    }
    if !digits.is_empty() {
        return Err(bad("the last number has no unit"));
    }
    Ok(total)
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
    fn durations_are_go_style_hours_minutes_seconds() {
        assert_eq!(duration_secs("2160h"), Ok(2160 * 3600));
        assert_eq!(duration_secs("2160h0m0s"), Ok(2160 * 3600));
        assert_eq!(duration_secs("1h30m"), Ok(5400));
        assert_eq!(duration_secs("90m"), Ok(5400));
        assert_eq!(duration_secs("20s"), Ok(20));
        for (bad, why) in [
            ("90d", "'d' is not a unit"),
            ("", "it is empty"),
            ("90", "the last number has no unit"),
            ("h", "a number must come before 'h'"),
            ("30m1h", "in that order"),
            ("1h1h", "in that order"),
            ("99999999999999999999h", "too large"),
        ] {
            let e = duration_secs(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("2160h"), "{bad}: {e}");
        }
    }

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

//! Where the broker may push: the `push-allowed-endpoints` allowlist, so a
//! push subscription can never make the broker a blind proxy into the
//! network it runs in.
//!
//! An entry is one of:
//! - an exact host name (`handler`, `hooks.example.com`): that host, at
//!   whatever address it resolves to (listing it by name is listing it);
//! - a wildcard (`*`, `*.example.com`): matching hosts, at **public**
//!   addresses only;
//! - an IP address or CIDR block (`127.0.0.1`, `10.0.0.0/8`, `::1`): any
//!   host that resolves into it, and URLs naming such an address.
//!
//! # Correctness
//! Names are checked when a group is created or updated, and addresses at
//! every connection (the resolver drops addresses the list does not allow),
//! so a name that later resolves somewhere private is refused then, not
//! followed (DNS rebinding).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// The broker's push allowlist, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allowlist {
    exact: Vec<String>,
    /// `""` for `*`, else the suffix after `*` (starting with `.`).
    wildcards: Vec<String>,
    nets: Vec<IpNet>,
}

/// How a host matched the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMatch {
    /// Listed by name: every address it resolves to is allowed.
    Exact,
    /// Matched by a wildcard: public addresses only (and listed nets).
    Wildcard,
    /// Not listed by name: only addresses in listed nets.
    None,
}

impl Allowlist {
    /// Parses comma-separated entries; an empty string allows nothing.
    pub fn parse(entries: &str) -> std::result::Result<Self, String> {
        let mut list = Allowlist::default();
        for entry in entries.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if let Some(suffix) = entry.strip_prefix('*') {
                if !(suffix.is_empty() || suffix.starts_with('.') && valid_name(&suffix[1..])) {
                    return Err(format!("`{entry}`: a wildcard is `*` or `*.domain`"));
                }
                list.wildcards.push(suffix.to_ascii_lowercase());
            } else if valid_name(entry) {
                list.exact.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!("`{entry}` is not a host name, `*.domain`, `*`, an IP address or a CIDR block"));
            }
        }
        Ok(list)
    }

    /// Whether nothing is allowed (the default).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty() && self.nets.is_empty()
    }

    /// How `host` (a name, not an address) matches.
    pub fn host_match(&self, host: &str) -> HostMatch {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.exact.contains(&host) {
            HostMatch::Exact
        } else if self.wildcards.iter().any(|w| w.is_empty() || host.ends_with(w.as_str())) {
            HostMatch::Wildcard
        } else {
            HostMatch::None
        }
    }

    /// Whether a connection to `ip`, reached through a host that matched as `how`, is allowed.
    pub fn allows(&self, ip: IpAddr, how: HostMatch) -> bool {
        let ip = canonical(ip);
        how == HostMatch::Exact
            || (how == HostMatch::Wildcard && is_public(ip))
            || self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether an address written in a URL (it never passes the resolver)
    /// is allowed: listed as an address or block, or public under `*`.
    pub fn allows_literal(&self, ip: IpAddr) -> bool {
        self.allows(ip, HostMatch::None) || (is_public(canonical(ip)) && self.wildcards.contains(&String::new()))
    }

    /// Checks an endpoint URL before it is stored: `http[s]://host[:port]/path`
    /// with a host this list can allow. Names `field` in the error.
    pub fn check_endpoint(&self, field: &'static str, endpoint: &str) -> Result<()> {
        let uri: axum::http::Uri =
            endpoint.parse().map_err(|e| Error::invalid(field, format!("{endpoint:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(Error::invalid(field, format!("{endpoint:?} must start with http:// or https://"))),
        }
        let Some(host) = uri.host() else {
            return Err(Error::invalid(field, format!("{endpoint:?} names no host")));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let allowed = match host.parse::<IpAddr>() {
            Ok(ip) => self.allows_literal(ip),
            Err(_) => self.host_match(host) != HostMatch::None || !self.nets.is_empty(),
        };
        if allowed {
            Ok(())
        } else if self.is_empty() {
            Err(Error::invalid(
                field,
                "this broker pushes nowhere: list the endpoint's host in push-allowed-endpoints (e.g. --push-allowed-endpoints handler,10.0.0.0/8)",
            ))
        } else {
            Err(Error::invalid(
                field,
                format!("host {host:?} is not in this broker's push-allowed-endpoints; loopback and private addresses must be listed as addresses or blocks"),
            ))
        }
    }
}

/// A host name of letters, digits, `-` and `.`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an ordinary Internet address: not loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast or documentation.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let list = Allowlist::parse("").expect("empty list");
        assert!(list.check_endpoint("e", "http://example.com/").is_err());
        assert!(list.check_endpoint("e", "http://127.0.0.1:80/").is_err());
        assert!(!list.allows(ip("8.8.8.8"), HostMatch::None));
    }

    #[test]
    fn wildcards_allow_public_addresses_only() {
        let list = Allowlist::parse("*.example.com").expect("list");
        assert_eq!(list.host_match("hooks.example.com"), HostMatch::Wildcard);
        assert_eq!(list.host_match("example.org"), HostMatch::None);
        assert!(list.allows(ip("93.184.216.34"), HostMatch::Wildcard));
        for private in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fd00::1", "::ffff:10.0.0.1"]
        {
            assert!(!list.allows(ip(private), HostMatch::Wildcard), "{private}");
        }
        assert!(list.check_endpoint("e", "http://hooks.example.com/x").is_ok());
        assert!(list.check_endpoint("e", "http://other.org/x").is_err());
    }

    #[test]
    fn listed_names_and_blocks_allow_private_addresses() {
        let list = Allowlist::parse("handler, 127.0.0.1, 10.0.0.0/8").expect("list");
        assert!(list.allows(ip("172.18.0.5"), list.host_match("HANDLER")));
        assert!(list.allows(ip("10.9.9.9"), HostMatch::None));
        assert!(list.allows(ip("::ffff:127.0.0.1"), HostMatch::None));
        assert!(!list.allows(ip("192.168.1.1"), HostMatch::None));
        assert!(list.check_endpoint("e", "http://127.0.0.1:9000/hook").is_ok());
        assert!(list.check_endpoint("e", "http://127.0.0.2:9000/hook").is_err());
        assert!(list.check_endpoint("e", "https://127.0.0.1:9000/hook").is_ok());
        assert!(list.check_endpoint("e", "ftp://127.0.0.1:9000/hook").is_err());
        assert!(list.check_endpoint("e", "ftp://handler/").is_err());
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["*foo", "http://x", "a b", "1.2.3.4/40"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
    }
}

//! The egress guard: deliveries to outside subscribers and dead-letter sinks never reach addresses
//! inside the network kinetic runs in (loopback, private ranges, link-local, cloud metadata, …)
//! unless the process allows that class of address (`--egress-allow`).
//!
//! A trigger's subscriber is whatever URL a user applied, so without a guard anyone who can apply a
//! trigger can make kinetic POST to the metadata service or an admin port on localhost (SSRF). The
//! check runs on the addresses a name resolves to (the clients' resolver, so a name that resolves to a
//! private address is caught, and only allowed addresses are connected to) and on IP-literal URLs
//! ([`Egress::check_url`]; the HTTP client does not ask a resolver for those). Redirects are never
//! followed, so an allowed address cannot bounce a delivery elsewhere.
//!
//! kinetic's own destinations (a Broker's ingress, Services behind the gateway) do not go through
//! the guard: see [`crate::sender`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An error a resolver hands to the HTTP client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A class of addresses the guard refuses unless allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), IPv6 unique local fc00::/7, site-local fec0::/10,
    /// local-use NAT64 64:ff9b:1::/48.
    Private,
    /// 169.254/16, fe80::/10 (the metadata addresses are their own class).
    LinkLocal,
    /// Cloud metadata services: 169.254.169.254, fd00:ec2::254.
    Metadata,
    /// Carrier-grade NAT shared space 100.64/10.
    Cgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8 (0.0.0.0 reaches this host), ::.
    Unspecified,
    /// Everything else not globally routable: 240/4 and broadcast, 192.0.0/24, the documentation
    /// and benchmarking ranges, 2001:db8::/32, 100::/64, Teredo 2001::/32.
    Reserved,
}

impl AddressClass {
    pub const ALL: [AddressClass; 8] = [
        AddressClass::Loopback,
        AddressClass::Private,
        AddressClass::LinkLocal,
        AddressClass::Metadata,
        AddressClass::Cgnat,
        AddressClass::Multicast,
        AddressClass::Unspecified,
        AddressClass::Reserved,
    ];

    /// The name `--egress-allow` takes.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "metadata",
            AddressClass::Cgnat => "cgnat",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Reserved => "reserved",
        }
    }

    fn described(self) -> &'static str {
        match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Cgnat => "a carrier-grade NAT address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// The class of `address`; `None` for a globally routable one.
pub fn classify(address: IpAddr) -> Option<AddressClass> {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if address == METADATA_V4 {
        return Some(Metadata);
    }
    Some(match address.octets() {
        [0, ..] => Unspecified,
        [127, ..] => Loopback,
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => Private,
        [169, 254, ..] => LinkLocal,
        [100, 64..=127, ..] => Cgnat,
        [224..=239, ..] => Multicast,
        [240..=255, ..]
        | [192, 0, 0 | 2, _]
        | [198, 51, 100, _]
        | [203, 0, 113, _]
        | [198, 18..=19, ..] => Reserved,
        _ => return None,
    })
}

fn classify_v6(address: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if address == METADATA_V6 {
        return Some(Metadata);
    }
    if address.is_unspecified() {
        return Some(Unspecified);
    }
    if address.is_loopback() {
        return Some(Loopback);
    }
    // An IPv4 address carried inside: the connection ends up there.
    if let Some(v4) = embedded_v4(address) {
        return classify_v4(v4);
    }
    let s = address.segments();
    Some(match s {
        [0x0064, 0xff9b, 0x0001, ..] => Private,
        [first, ..] if first & 0xfe00 == 0xfc00 => Private,
        [first, ..] if first & 0xffc0 == 0xfec0 => Private,
        [first, ..] if first & 0xffc0 == 0xfe80 => LinkLocal,
        [first, ..] if first & 0xff00 == 0xff00 => Multicast,
        [0x2001, 0x0db8, ..] | [0x0100, 0, 0, 0, ..] | [0x2001, 0x0000, ..] => Reserved,
        _ => return None,
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`) address.
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = address.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, high, low_half, ..] => Some(Ipv4Addr::new(
            (high >> 8) as u8,
            high as u8,
            (low_half >> 8) as u8,
            low_half as u8,
        )),
        _ => None,
    }
}

/// One item of `--egress-allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    Class(AddressClass),
    /// No guard at all.
    All,
    /// Nothing beyond public addresses (the default).
    None,
}

/// An `--egress-allow` item that is not a class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address class; use one or more of {classes}, or `all` (no guard) or `none`", classes = class_names())]
pub struct UnknownClass(pub String);

fn class_names() -> String {
    AddressClass::ALL
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Allow {
    type Err = UnknownClass;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let name = text.trim().to_ascii_lowercase();
        match name.as_str() {
            "all" => Ok(Allow::All),
            // An empty value (`KINETIC_EGRESS_ALLOW=`) allows nothing, as its absence does.
            "none" | "" => Ok(Allow::None),
            _ => AddressClass::ALL
                .into_iter()
                .find(|class| class.name() == name)
                .map(Allow::Class)
                .ok_or_else(|| UnknownClass(text.to_owned())),
        }
    }
}

/// Which address classes deliveries may reach. The default allows none: only globally routable
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    allowed: BTreeSet<AddressClass>,
    all: bool,
}

impl Egress {
    pub fn new(allows: &[Allow]) -> Self {
        let mut egress = Egress::default();
        for allow in allows {
            match allow {
                Allow::Class(class) => {
                    egress.allowed.insert(*class);
                }
                Allow::All => egress.all = true,
                Allow::None => {}
            }
        }
        egress
    }

    /// No guard: every address may be reached.
    pub fn allow_all() -> Self {
        Egress {
            allowed: BTreeSet::new(),
            all: true,
        }
    }

    /// The class of `address` when it is refused.
    pub fn refuses(&self, address: IpAddr) -> Option<AddressClass> {
        if self.all {
            return None;
        }
        classify(address).filter(|class| !self.allowed.contains(class))
    }

    /// Checks a URL whose host is an IP literal (names are checked when they are resolved).
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6)),
            _ => Ok(()),
        }
    }

    /// Checks an address a URL names literally: an HTTP client connects to it without resolving.
    pub fn check_ip(&self, address: IpAddr) -> Result<(), Refused> {
        match self.refuses(address) {
            None => Ok(()),
            Some(class) => Err(Refused {
                name: None,
                address,
                classes: vec![class],
            }),
        }
    }

    /// Resolves `host` through the system resolver and keeps the addresses that may be reached;
    /// fails with [`Refused`] when none is left.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
        let host = host.trim_end_matches('.');
        let found: Vec<_> = tokio::net::lookup_host((host, 0)).await?.collect();
        Ok(self.filter(host, found)?)
    }

    /// Checks a host kinetic is asked to connect to by a resource with a client of its own (a
    /// source's S3 endpoint or SQS queue, a ConfigMap's Kafka servers): an IP literal against
    /// the rules, a name by resolving it. A name that does not resolve now is the client's to
    /// retry; only the guard's refusal stops the connection.
    pub async fn check_host(&self, host: &str) -> Result<(), Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(address) = host.parse::<IpAddr>() {
            return self.check_ip(address);
        }
        let Ok(found) = tokio::net::lookup_host((host.trim_end_matches('.'), 0)).await else {
            return Ok(());
        };
        self.filter(host.trim_end_matches('.'), found.collect())
            .map(|_| ())
    }

    /// Keeps the addresses `name` resolved to that may be reached; refuses when none is left.
    pub fn filter(&self, name: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let (allowed, refused): (Vec<_>, Vec<_>) = found
            .into_iter()
            .map(|socket| (socket, self.refuses(socket.ip())))
            .partition(|(_, class)| class.is_none());
        if !allowed.is_empty() || refused.is_empty() {
            return Ok(allowed.into_iter().map(|(socket, _)| socket).collect());
        }
        let classes: BTreeSet<AddressClass> = refused.iter().filter_map(|(_, c)| *c).collect();
        Err(Refused {
            name: Some(name.to_owned()),
            address: refused[0].0.ip(),
            classes: classes.into_iter().collect(),
        })
    }
}

/// A delivery the guard stopped before anything was sent. Not retryable: the answer would be the
/// same until the process configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The host name, when it was resolved (not an IP literal).
    pub name: Option<String>,
    pub address: IpAddr,
    /// Classes of the refused addresses (what `--egress-allow` would need).
    pub classes: Vec<AddressClass>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let described = classify(self.address).map_or("", AddressClass::described);
        match &self.name {
            Some(name) => write!(
                f,
                "refused: {name} resolves to {}, {described}",
                self.address
            )?,
            None => write!(f, "refused: {} is {described}", self.address)?,
        }
        let names: Vec<&str> = self.classes.iter().map(|c| c.name()).collect();
        write!(f, "; allow it with --egress-allow {}", names.join(","))
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn class(text: &str) -> Option<AddressClass> {
        classify(text.parse().unwrap())
    }

    #[test]
    fn every_class_in_v4_v6_and_embedded_forms() {
        let table: &[(&str, Option<AddressClass>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("10.0.0.5", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fdff:ffff::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("64:ff9b:1::a00:1", Some(Private)),
            ("::ffff:10.0.0.5", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.253", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("::ffff:169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("fd00:ec2::254", Some(Metadata)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.255", Some(Cgnat)),
            ("::ffff:100.100.100.200", Some(Cgnat)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("255.255.255.255", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.170", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.51.100.7", Some(Reserved)),
            ("203.0.113.9", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("2001:db8::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("2001::1", Some(Reserved)),
            // IPv4 carried in IPv6: compatible, NAT64 and 6to4 forms.
            ("::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("64:ff9b::c0a8:101", Some(Private)),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a00:5::1", Some(Private)),
            // Public addresses, and the edges just outside the ranges.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("11.0.0.1", None),
            ("172.15.255.255", None),
            ("172.32.0.1", None),
            ("192.169.0.1", None),
            ("169.255.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.1", None),
            ("223.255.255.255", None),
            ("126.255.255.255", None),
            ("128.0.0.1", None),
            ("198.20.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            ("fbff::1", None),
            ("fe00::1", None),
        ];
        for (text, expected) in table {
            assert_eq!(class(text), *expected, "{text}");
        }
    }

    #[test]
    fn allowing_a_class_allows_only_that_class() {
        let egress = Egress::new(&[Allow::Class(Loopback), Allow::Class(Private)]);
        let refused = |text: &str| egress.refuses(text.parse().unwrap());
        assert_eq!(refused("127.0.0.1"), None);
        assert_eq!(refused("::ffff:10.1.2.3"), None);
        assert_eq!(refused("169.254.169.254"), Some(Metadata));
        assert_eq!(refused("fd00:ec2::254"), Some(Metadata), "not private");
        assert_eq!(refused("169.254.1.1"), Some(LinkLocal));
        assert_eq!(refused("8.8.8.8"), None);
        let nothing = Egress::default();
        for class in AddressClass::ALL {
            let sample = match class {
                Loopback => "127.0.0.1",
                Private => "10.0.0.1",
                LinkLocal => "fe80::1",
                Metadata => "169.254.169.254",
                Cgnat => "100.64.0.1",
                Multicast => "224.0.0.1",
                Unspecified => "0.0.0.0",
                Reserved => "240.0.0.1",
            };
            assert_eq!(nothing.refuses(sample.parse().unwrap()), Some(class));
            assert_eq!(
                Egress::new(&[Allow::Class(class)]).refuses(sample.parse().unwrap()),
                None
            );
            assert_eq!(Egress::allow_all().refuses(sample.parse().unwrap()), None);
        }
    }

    #[test]
    fn allow_lists_parse_with_a_clear_error() {
        assert_eq!("loopback".parse(), Ok(Allow::Class(Loopback)));
        assert_eq!(" Link-Local ".parse(), Ok(Allow::Class(LinkLocal)));
        assert_eq!("all".parse(), Ok(Allow::All));
        assert_eq!("none".parse(), Ok(Allow::None));
        assert_eq!("".parse(), Ok(Allow::None));
        let error = "privat".parse::<Allow>().unwrap_err().to_string();
        assert_eq!(
            error,
            "`privat` is not an address class; use one or more of loopback, private, link-local, metadata, cgnat, multicast, unspecified, reserved, or `all` (no guard) or `none`"
        );
        for class in AddressClass::ALL {
            assert_eq!(class.name().parse(), Ok(Allow::Class(class)));
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_in_every_spelling() {
        let egress = Egress::default();
        let check = |text: &str| egress.check_url(&url::Url::parse(text).unwrap());
        let refused = check("http://10.0.0.5:8080/hook").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused: 10.0.0.5 is a private address; allow it with --egress-allow private"
        );
        // Other spellings of 127.0.0.1 that URL parsing normalises.
        for text in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert_eq!(check(text).unwrap_err().classes, [Loopback], "{text}");
        }
        assert_eq!(
            check("http://[fd00:ec2::254]/latest/meta-data/")
                .unwrap_err()
                .to_string(),
            "refused: fd00:ec2::254 is a cloud metadata address; allow it with --egress-allow metadata"
        );
        assert!(
            check("https://hooks.example/in").is_ok(),
            "names are resolved later"
        );
        assert!(check("http://93.184.215.14/").is_ok());
    }

    #[test]
    fn resolved_names_keep_only_allowed_addresses() {
        let egress = Egress::default();
        let socket = |text: &str| std::net::SocketAddr::new(text.parse().unwrap(), 0);
        // A name resolving to a public and a private address connects to the public one only.
        assert_eq!(
            egress.filter("mixed.example", vec![socket("10.0.0.5"), socket("8.8.8.8")]),
            Ok(vec![socket("8.8.8.8")])
        );
        let refused = egress
            .filter("localhost", vec![socket("::1"), socket("127.0.0.1")])
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused: localhost resolves to ::1, a loopback address; allow it with --egress-allow loopback"
        );
        let refused = egress
            .filter(
                "api.example",
                vec![socket("10.0.0.5"), socket("169.254.169.254")],
            )
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused: api.example resolves to 10.0.0.5, a private address; allow it with --egress-allow private,metadata"
        );
        assert_eq!(egress.filter("nothing.example", vec![]), Ok(vec![]));
    }

    #[tokio::test]
    async fn hosts_are_checked_as_literals_or_by_what_they_resolve_to() {
        let guarded = Egress::default();
        for refused in ["127.0.0.1", "[::1]", "::1", "localhost", "169.254.169.254"] {
            assert!(
                guarded.check_host(refused).await.is_err(),
                "{refused} passed the guard"
            );
        }
        // A name that does not resolve now is the client's to retry.
        assert_eq!(guarded.check_host("kinetic-test.invalid").await, Ok(()));
        let loopback = Egress::new(&[Allow::Class(Loopback)]);
        for allowed in ["127.0.0.1", "[::1]", "localhost"] {
            assert_eq!(loopback.check_host(allowed).await, Ok(()), "{allowed}");
        }
    }
}

//! The unit config contract (`unit.toml`) and the fleet inventory
//! (`fleet.toml`): what makes one server *this* unit.
//!
//! Resolution order on the unit: the seed partition's `unit.toml`, then a
//! fleet inventory (the seed's `fleet.toml`, then the image's) matched by MAC
//! address or DMI serial, then the image's defaults.
//!
//! [`RawUnit`] is what serde reads (values checked by newtypes, so errors
//! carry key paths); [`validate`] checks what spans keys and returns a
//! [`Unit`], the only type the provisioning code accepts.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ConfigErrors, parse_toml};

/// Unit config schema version.
pub const UNIT_SCHEMA: u32 = 1;
/// Fleet inventory schema version.
pub const FLEET_SCHEMA: u32 = 1;

macro_rules! checked_string {
    ($(#[$m:meta])* $name:ident, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let f: fn(&str) -> Result<String, String> = $check;
                Ok(Self(f(&s)?))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String { v.0 }
        }
        impl $name {
            /// As text.
            pub fn as_str(&self) -> &str { &self.0 }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }
    };
}

checked_string!(
    /// A hostname: one DNS label (RFC 1123), lower case.
    Hostname,
    |s| {
        if is_lower_dns_label(s) { Ok(s.to_string()) } else {
            Err(format!("{s:?} is not a hostname: expected 1-63 lower-case letters, digits and '-', not starting or ending with '-' (e.g. \"fp-cam-03\")"))
        }
    }
);

checked_string!(
    /// A flypack's or a network segment's name in the central view (a label
    /// value and the central's user name): one DNS label, lower case.
    LabelName,
    |s| {
        if is_lower_dns_label(s) { Ok(s.to_string()) } else {
            Err(format!("{s:?} is not a name: expected 1-63 lower-case letters, digits and '-', not starting or ending with '-' (e.g. \"fp-north\")"))
        }
    }
);

checked_string!(
    /// A Linux interface name (at most 15 bytes).
    IfName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s != "." && s != ".."
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if ok { Ok(s.to_string()) } else {
            Err(format!("{s:?} is not a Linux interface name: expected 1-15 letters, digits, '-', '_', '.' (e.g. \"enp1s0\", \"media.100\")"))
        }
    }
);

checked_string!(
    /// A label for an interface in the config (used in file names and as a VLAN parent).
    Label,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok { Ok(s.to_string()) } else {
            Err(format!("{s:?} is not an interface label: expected lower-case letters, digits and '-', starting with a letter (e.g. \"mgmt\", \"media\")"))
        }
    }
);

checked_string!(
    /// A MAC address, `aa:bb:cc:dd:ee:ff` (stored lower case).
    MacAddr,
    |s| {
        let l = s.to_ascii_lowercase();
        let parts: Vec<&str> = l.split(':').collect();
        let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
        if ok { Ok(l) } else {
            Err(format!("{s:?} is not a MAC address: expected six hex pairs separated by ':' (e.g. \"52:54:00:f1:00:02\")"))
        }
    }
);

checked_string!(
    /// A date, `YYYY-MM-DD`.
    Date,
    |s| {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s, &fmt).map(|_| s.to_string()).map_err(|_| format!("{s:?} is not a date: expected YYYY-MM-DD (e.g. \"2026-12-31\")"))
    }
);

impl Date {
    /// The date.
    pub fn date(&self) -> time::Date {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(&self.0, &fmt).expect("checked on parse")
    }
}

/// An address with its prefix length, `10.0.0.5/24` or `fd00::5/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl TryFrom<String> for IpCidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address with a prefix: expected e.g. \"10.0.0.5/24\" or \"fd00::5/64\"");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max || prefix == 0 {
            return Err(format!("{s:?}: prefix /{prefix} is out of range 1-{max}"));
        }
        if addr.is_multicast() || addr.is_unspecified() || addr.is_loopback() {
            return Err(format!(
                "{s:?} cannot be an interface address (multicast, unspecified or loopback)"
            ));
        }
        Ok(IpCidr { addr, prefix })
    }
}

impl From<IpCidr> for String {
    fn from(v: IpCidr) -> String {
        v.to_string()
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl IpCidr {
    /// Whether `ip` is in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// How an interface is found on the hardware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// By kernel name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<IfName>,
    /// By MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// A kernel network link, as netlink or /sys shows it, for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenLink<'a> {
    /// Kernel name.
    pub name: &'a str,
    /// MAC address (any case).
    pub mac: Option<&'a str>,
    /// VLAN id, when it is a VLAN.
    pub vlan_id: Option<u16>,
    /// Link kind for virtual links (`vlan`, `bridge`, `veth`...), None for a NIC.
    pub kind: Option<&'a str>,
}

impl Match {
    /// The one matching rule (networkd's, which the networkd files carry):
    /// every criterion that is set must hold; a MAC matches physical links
    /// only (a VLAN or bridge on the NIC carries the same MAC).
    pub fn matches(&self, l: &SeenLink) -> bool {
        let name_ok = self.name.as_ref().is_none_or(|n| n.as_str() == l.name);
        let mac_ok = self.mac.as_ref().is_none_or(|m| {
            l.mac.is_some_and(|x| x.eq_ignore_ascii_case(m.as_str()))
                && l.vlan_id.is_none()
                && !matches!(l.kind, Some("vlan" | "bridge" | "bond" | "macvlan"))
        });
        (self.name.is_some() || self.mac.is_some()) && name_ok && mac_ok
    }
}

/// How a [`Link`] is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Find {
    /// A NIC, by its match.
    Nic(Match),
    /// A VLAN of this name, on the NIC with this label.
    Vlan {
        /// Its kernel name.
        name: IfName,
        /// The parent's label.
        parent: Label,
        /// VLAN id.
        id: u16,
    },
}

/// An interface or VLAN of the config: the one model every projection is
/// derived from (networkd files, netlink expectations, QA, the firewall,
/// the exporter), with one matching rule and one gateway list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface label, or VLAN name.
    pub label: String,
    /// How to find it.
    pub find: Find,
    /// Firewall zone.
    pub zone: Zone,
    /// DHCPv4.
    pub dhcp: bool,
    /// Static addresses.
    pub statics: Vec<IpCidr>,
    /// Default gateways (IPv4 and IPv6).
    pub gateways: Vec<IpAddr>,
    /// MTU.
    pub mtu: Option<u32>,
    /// QA expects it up.
    pub required: bool,
}

impl Link {
    /// Whether `l` is this link.
    pub fn matches(&self, l: &SeenLink) -> bool {
        match &self.find {
            Find::Nic(m) => m.matches(l),
            Find::Vlan { name, id, .. } => l.name == name.as_str() && l.vlan_id.is_none_or(|v| v == *id),
        }
    }

    /// How it is found, in words.
    pub fn describe(&self) -> String {
        match &self.find {
            Find::Nic(m) => match (&m.name, &m.mac) {
                (Some(n), Some(mac)) => format!("{n} with MAC {mac}"),
                (Some(n), None) => n.to_string(),
                (None, Some(mac)) => format!("MAC {mac}"),
                (None, None) => "?".into(),
            },
            Find::Vlan { name, parent, id } => format!("{name} (VLAN {id} on {parent})"),
        }
    }
}

/// NIC tuning, written as a systemd .link file. It matches the NIC by MAC,
/// and by name through the udev property the name comes from
/// (`ID_NET_NAME_PATH=enp1s0`): a .link file is matched before udev renames
/// the NIC, so the predictable name is not its name yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// RX ring size (ethtool -G rx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_ring: Option<u32>,
    /// TX ring size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_ring: Option<u32>,
    /// Generic receive offload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gro: Option<bool>,
    /// Wake-on-LAN off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_on_lan: Option<bool>,
}

impl Tuning {
    /// Whether anything is set.
    pub fn is_empty(&self) -> bool {
        self == &Tuning::default()
    }
}

/// A physical interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Label (file names, VLAN parents, QA output).
    pub label: Label,
    /// How to find it.
    #[serde(rename = "match")]
    pub matcher: Match,
    /// DHCPv4.
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses (IPv4 and IPv6).
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
    /// IPv4 default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// QA expects carrier on it.
    #[serde(default = "yes")]
    pub required: bool,
    /// NIC tuning.
    #[serde(default, skip_serializing_if = "Tuning::is_empty")]
    pub tuning: Tuning,
    /// Firewall zone [default: management when it has DHCP or a gateway, else media].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
}

/// Which firewall rules an interface gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// The management LAN: SSH and the web app.
    Management,
    /// A media LAN: only IGMP, the configured multicast groups, SRT and PTP.
    Media,
}

impl Interface {
    /// Its firewall zone: as set, else management when it has DHCP or a gateway.
    pub fn zone(&self) -> Zone {
        self.zone
            .unwrap_or(if self.dhcp || self.gateway.is_some() || self.gateway6.is_some() {
                Zone::Management
            } else {
                Zone::Media
            })
    }
}

impl Vlan {
    /// Its firewall zone: as set, else management when it has DHCP or a gateway.
    pub fn zone(&self) -> Zone {
        self.zone.unwrap_or(if self.dhcp || self.gateway.is_some() {
            Zone::Management
        } else {
            Zone::Media
        })
    }
}

/// A VLAN on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    /// Linux name of the VLAN interface (e.g. `media.100`).
    pub name: IfName,
    /// Label of the parent interface.
    pub parent: Label,
    /// VLAN id (1-4094).
    pub id: u16,
    /// DHCPv4.
    #[serde(default)]
    pub dhcp: bool,
    /// Static addresses.
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
    /// IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// QA expects it up.
    #[serde(default = "yes")]
    pub required: bool,
    /// Firewall zone [default: management when it has DHCP or a gateway, else media].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<Zone>,
}

fn yes() -> bool {
    true
}

/// `[dns]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Servers.
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

/// PTP expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ptp {
    /// PTP domain number.
    #[serde(default)]
    pub domain: u8,
    /// Label of the interface PTP runs on.
    pub interface: Label,
}

/// `[time]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    /// NTP servers (chrony).
    #[serde(default)]
    pub ntp: Vec<String>,
    /// PTP, when the venue has a grandmaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptp: Option<Ptp>,
    /// Synchronised time is required (time.sync is critical, not a warning).
    #[serde(default)]
    pub required: bool,
}

/// One multicast group the unit must receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group address.
    pub group: Ipv4Addr,
    /// Label of the interface or name of the VLAN it arrives on.
    pub interface: String,
    /// UDP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Source for source-specific multicast (IGMPv3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Addr>,
    /// Expected bitrate, Mb/s (monitoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_mbps: Option<f64>,
}

/// `[multicast]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Multicast {
    /// IGMP version to force on multicast interfaces (2 or 3).
    #[serde(default = "igmp3")]
    pub igmp_version: u8,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<Group>,
}

impl Eq for Multicast {}
impl Eq for Group {}

impl Default for Multicast {
    fn default() -> Self {
        Multicast {
            igmp_version: 3,
            groups: Vec::new(),
        }
    }
}

fn igmp3() -> u8 {
    3
}

/// An SRT stream the video exporter reports on, read from the statistics
/// file `srt-live-transmit -s:1000 -statsout:FILE -pf:json -f` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrtStream {
    /// Stream name (metric label).
    pub name: Label,
    /// The JSON statistics file.
    pub stats_file: String,
    /// The UDP port this unit listens on for the stream (SRT listener mode;
    /// the firewall opens it). None: this unit calls out (caller mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Interface label or VLAN name it arrives on [default: every media interface].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// Which internal disk the USB installer writes (first rule that is set wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRule {
    /// Disk serial number (lsblk SERIAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// World wide name (lsblk WWN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Model (lsblk MODEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `[install]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// The disk to install on.
    #[serde(default)]
    pub disk: DiskRule,
    /// This unit's disk may be overwritten although it holds data (a
    /// partition table or a filesystem), as the profile's [installer]
    /// allow_wipe allows for every unit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_wipe: bool,
}

/// A QA waiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// Check id.
    pub check: String,
    /// Why it is acceptable.
    pub reason: String,
    /// Last day it is valid.
    pub expires: Date,
}

/// `[qa]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qa {
    /// SRT bitrate the unit must carry, Mb/s.
    #[serde(default = "srt_bitrate")]
    pub srt_bitrate_mbps: f64,
    /// SRT latency, ms.
    #[serde(default = "srt_latency")]
    pub srt_latency_ms: u32,
    /// Minimum free space on the root filesystem, MiB.
    #[serde(default = "min_free")]
    pub min_free_disk_mib: u64,
    /// Seconds to wait for links and addresses.
    #[serde(default = "settle")]
    pub settle_seconds: u32,
    /// Waivers.
    #[serde(default)]
    pub waivers: Vec<Waiver>,
}

impl Eq for Qa {}

impl Default for Qa {
    fn default() -> Self {
        Qa {
            srt_bitrate_mbps: srt_bitrate(),
            srt_latency_ms: srt_latency(),
            min_free_disk_mib: min_free(),
            settle_seconds: settle(),
            waivers: vec![],
        }
    }
}

fn srt_bitrate() -> f64 {
    20.0
}
fn srt_latency() -> u32 {
    1000
}
fn min_free() -> u64 {
    2048
}
fn settle() -> u32 {
    30
}

/// `[access]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// SSH keys of the people who may log in to this unit (as the image's sudo users).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
}

/// `[alerting]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// Where firing alerts go, besides the unit's web app: an Alertmanager,
    /// or any receiver of Alertmanager's API (`http[s]://HOST[:PORT][/PATH]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
}

impl Alerting {
    /// The notifier file vmalert reads (`-notifier.config`): the
    /// Alertmanager named, or none (vmalert needs the file either way).
    pub fn notifier_config(&self) -> String {
        let head = "# Where vmalert sends firing alerts: written by firstboot from the unit\n\
                    # config's [alerting] table. Edit that, not this file.\n";
        match self.alertmanager.as_deref().and_then(|u| url::Url::parse(u).ok()) {
            Some(u) => {
                let host = u.host_str().unwrap_or_default();
                let port = u.port_or_known_default().unwrap_or(9093);
                // Validated: the host is a DNS name or an address, the path
                // plain characters; JSON strings are valid YAML.
                let target = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                format!(
                    "{head}scheme: {}\npath_prefix: {}\nstatic_configs:\n  - targets: [{}]\n",
                    serde_json::Value::from(u.scheme()),
                    serde_json::Value::from(u.path().trim_end_matches('/')),
                    serde_json::Value::from(target)
                )
            }
            None => format!("{head}static_configs: []\n"),
        }
    }
}

/// `[central]`: where this unit sends its metrics, besides its own
/// VictoriaMetrics (a second vmagent, `vmagent-central`, queues on disk
/// while the link is down). The password is not here: it comes from the
/// seed's `central-password` (`builder customize --central-password`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Central {
    /// The central's remote-write endpoint (its vmauth):
    /// `https://HOST[:PORT]/api/v1/write`.
    pub url: String,
    /// The flypack this unit belongs to: its `flypack` label, and the user
    /// name it logs in to the central with.
    pub flypack: LabelName,
    /// The network segment (venue, truck), its `segment` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<LabelName>,
}

impl Central {
    /// The folder, beside the stack's compose file, of what vmagent-central reads.
    pub const DIR: &str = "central";
    /// Its settings (docker-compose's `env_file`; vmagent reads them with `-envflag.enable`).
    pub const ENV_FILE: &str = "central/vmagent.env";
    /// The password file (from the seed), mode 0400 for vmagent's user.
    pub const PASSWORD_FILE: &str = "central/password";
    /// The CA that signed the central's certificate (the fleet CA from the seed).
    pub const CA_FILE: &str = "central/ca.crt";

    /// vmagent-central's env file: where to send, the labels that name this
    /// unit, the user name, and the CA file when there is one. Every value
    /// was validated (no comma, space or control character), so none can
    /// split into a second flag value or line.
    pub fn vmagent_env(&self, hostname: &Hostname, ca: bool) -> String {
        let mut labels = format!("flypack={},unit={hostname}", self.flypack);
        if let Some(s) = &self.segment {
            labels.push_str(&format!(",segment={s}"));
        }
        let mut env = format!(
            "# vmagent-central's settings: written by firstboot from the unit config's\n\
             # [central] table. Edit that, not this file.\n\
             remoteWrite_url={}\nremoteWrite_label={labels}\nremoteWrite_basicAuth_username={}\n",
            self.url, self.flypack
        );
        if ca {
            env.push_str("remoteWrite_tlsCAFile=/etc/flypack/central/ca.crt\n");
        }
        env
    }
}

/// Why a `[central] url` is refused, if it is.
fn central_url_problem(s: &str) -> Option<String> {
    if let Some(p) = http_url_problem(s) {
        return Some(p);
    }
    if !s.starts_with("https://") {
        return Some(format!(
            "{s:?}: the central is reached over https:// only (the unit logs in with a password; on plain HTTP anyone on the path reads it)"
        ));
    }
    None
}

/// Why an `[alerting] alertmanager` URL is refused, if it is.
fn alertmanager_problem(s: &str) -> Option<String> {
    http_url_problem(s)
}

/// Why a URL the unit config names is refused, if it is.
fn http_url_problem(s: &str) -> Option<String> {
    // The URL parser trims spaces and control characters the string keeps,
    // and a file written from it must not gain a line or a list item.
    if s.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',') {
        return Some(format!("{s:?}: a URL holds no space, comma or control character"));
    }
    let u = match url::Url::parse(s) {
        Ok(u) => u,
        Err(e) => {
            return Some(format!(
                "{s:?} is not a URL ({e}): expected http[s]://HOST[:PORT][/PATH]"
            ));
        }
    };
    if !matches!(u.scheme(), "http" | "https") {
        return Some(format!("{s:?}: expected an http:// or https:// URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some(format!(
            "{s:?} carries credentials: the unit config is readable by every service on the unit; put no secret in it"
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Some(format!("{s:?}: no query or fragment (only a path prefix)"));
    }
    match u.host() {
        Some(url::Host::Domain(d)) if is_dns_name(d) => {}
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {}
        _ => return Some(format!("{s:?}: the host must be a DNS name or an IP address")),
    }
    if !u
        .path()
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
    {
        return Some(format!("{s:?}: the path may hold only letters, digits and / - _ ."));
    }
    None
}

/// A unit config as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnit {
    /// [`UNIT_SCHEMA`].
    pub version: u32,
    /// Hostname.
    pub hostname: Hostname,
    /// Free text: what this unit does in the flypack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Physical interfaces. None: DHCP on every wired NIC.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// VLANs.
    #[serde(default)]
    pub vlans: Vec<Vlan>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
    /// Time.
    #[serde(default)]
    pub time: Time,
    /// Multicast expectations.
    #[serde(default)]
    pub multicast: Multicast,
    /// SRT streams to monitor.
    #[serde(default)]
    pub srt: Vec<SrtStream>,
    /// What the USB installer does for this unit.
    #[serde(default)]
    pub install: Install,
    /// QA thresholds and waivers.
    #[serde(default)]
    pub qa: Qa,
    /// Who may log in.
    #[serde(default)]
    pub access: Access,
    /// Where alerts go.
    #[serde(default, skip_serializing_if = "is_default")]
    pub alerting: Alerting,
    /// Where metrics go besides the unit (federation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<Central>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// A validated unit config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Unit(RawUnit);

impl std::ops::Deref for Unit {
    type Target = RawUnit;
    fn deref(&self) -> &RawUnit {
        &self.0
    }
}

impl RawUnit {
    /// The interface with this label.
    pub fn interface(&self, label: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.label.as_str() == label)
    }
}

impl RawUnit {
    /// Every interface and VLAN as a [`Link`], interfaces first.
    pub fn links(&self) -> Vec<Link> {
        let mut v = Vec::new();
        for i in &self.interfaces {
            let mut gateways: Vec<IpAddr> = i.gateway.map(IpAddr::V4).into_iter().collect();
            gateways.extend(i.gateway6.map(IpAddr::V6));
            v.push(Link {
                label: i.label.to_string(),
                find: Find::Nic(i.matcher.clone()),
                zone: i.zone(),
                dhcp: i.dhcp,
                statics: i.addresses.clone(),
                gateways,
                mtu: i.mtu,
                required: i.required,
            });
        }
        for vl in &self.vlans {
            v.push(Link {
                label: vl.name.to_string(),
                find: Find::Vlan {
                    name: vl.name.clone(),
                    parent: vl.parent.clone(),
                    id: vl.id,
                },
                zone: vl.zone(),
                dhcp: vl.dhcp,
                statics: vl.addresses.clone(),
                gateways: vl.gateway.map(IpAddr::V4).into_iter().collect(),
                mtu: vl.mtu,
                required: vl.required,
            });
        }
        v
    }

    /// The link with this label or VLAN name.
    pub fn link(&self, label: &str) -> Option<Link> {
        self.links().into_iter().find(|l| l.label == label)
    }
}

impl Unit {
    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.0).expect("a unit config serialises")
    }

    /// Digest of the config (canonical JSON).
    pub fn digest(&self) -> String {
        crate::digest::sha256_hex(&serde_json::to_vec(&self.0).expect("serialises"))
    }
}

/// Checks what spans keys; `prefix` is prepended to key paths (for fleet entries).
pub fn validate(file: &Path, prefix: &str, raw: RawUnit) -> Result<Unit, ConfigErrors> {
    let mut errs = Vec::new();
    let mut err = |key: String, msg: String| errs.push(ConfigError::new(file, format!("{prefix}{key}"), msg));
    if raw.version != UNIT_SCHEMA {
        err(
            "version".into(),
            format!(
                "expected {UNIT_SCHEMA} (the unit config schema this firstboot reads), found {}",
                raw.version
            ),
        );
    }
    let mut labels = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for (i, itf) in raw.interfaces.iter().enumerate() {
        let k = format!("interfaces[{i}]");
        if !labels.insert(itf.label.as_str()) {
            err(format!("{k}.label"), format!("{:?} is used twice", itf.label.as_str()));
        }
        match (&itf.matcher.name, &itf.matcher.mac) {
            (None, None) => err(
                format!("{k}.match"),
                "expected name or mac (e.g. match = { mac = \"52:54:00:f1:00:02\" })".into(),
            ),
            (Some(n), _) if !names.insert(n.as_str()) => {
                err(format!("{k}.match.name"), format!("{n:?} is matched twice"))
            }
            (_, Some(m)) if !macs.insert(m.as_str()) => {
                err(format!("{k}.match.mac"), format!("{m:?} is matched twice"))
            }
            _ => {}
        }
        check_addressing(
            &mut err,
            &k,
            itf.dhcp,
            &itf.addresses,
            itf.gateway.map(IpAddr::V4),
            itf.mtu,
        );
        if let Some(g6) = itf.gateway6
            && !itf.addresses.iter().any(|a| a.contains(IpAddr::V6(g6)))
        {
            err(
                format!("{k}.gateway6"),
                format!("{g6} is not in any of the interface's IPv6 addresses: add an address in its subnet"),
            );
        }
    }
    for (i, v) in raw.vlans.iter().enumerate() {
        let k = format!("vlans[{i}]");
        if !(1..=4094).contains(&v.id) {
            err(format!("{k}.id"), format!("{} is not a VLAN id: expected 1-4094", v.id));
        }
        if !raw.interfaces.iter().any(|itf| itf.label == v.parent) {
            err(
                format!("{k}.parent"),
                format!(
                    "{:?} is not the label of an interface in [[interfaces]]",
                    v.parent.as_str()
                ),
            );
        }
        if !names.insert(v.name.as_str()) {
            err(format!("{k}.name"), format!("{:?} is used twice", v.name.as_str()));
        }
        if raw.vlans[..i].iter().any(|o| o.parent == v.parent && o.id == v.id) {
            err(format!("{k}.id"), format!("VLAN {} is already on {}", v.id, v.parent));
        }
        check_addressing(&mut err, &k, v.dhcp, &v.addresses, v.gateway.map(IpAddr::V4), v.mtu);
    }
    for (i, s) in raw.dns.search.iter().enumerate() {
        if !is_dns_name(s) {
            err(format!("dns.search[{i}]"), format!("{s:?} is not a domain name"));
        }
    }
    if let Some(p) = &raw.time.ptp
        && raw.interface(p.interface.as_str()).is_none()
    {
        err(
            "time.ptp.interface".into(),
            format!(
                "{:?} is not the label of an interface in [[interfaces]]",
                p.interface.as_str()
            ),
        );
    }
    for (i, n) in raw.time.ntp.iter().enumerate() {
        // Written into chrony's config: a hostname or an address, nothing else.
        if n.parse::<IpAddr>().is_err() && !is_dns_name(n) {
            err(
                format!("time.ntp[{i}]"),
                format!(
                    "{n:?} is not an NTP server: expected a hostname (e.g. \"ntp.venue.example\") or an IP address"
                ),
            );
        }
    }
    if let Some(r) = &raw.role
        && !(r.len() <= 32 && r.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) && !r.is_empty())
    {
        err(
            "role".into(),
            format!("{r:?} is not a role: expected 1-32 letters, digits, '-' or '_' (e.g. \"encoder\")"),
        );
    }
    if raw.time.required && raw.time.ntp.is_empty() && raw.time.ptp.is_none() {
        err(
            "time.required".into(),
            "time is required but no NTP server or PTP interface is configured: add time.ntp or time.ptp".into(),
        );
    }
    if !(raw.multicast.igmp_version == 2 || raw.multicast.igmp_version == 3) {
        err(
            "multicast.igmp_version".into(),
            format!("{}: expected 2 or 3", raw.multicast.igmp_version),
        );
    }
    for (i, g) in raw.multicast.groups.iter().enumerate() {
        if !g.group.is_multicast() {
            err(
                format!("multicast.groups[{i}].group"),
                format!("{} is not a multicast address (224.0.0.0/4)", g.group),
            );
        }
        let known = raw.interfaces.iter().any(|itf| itf.label.as_str() == g.interface)
            || raw.vlans.iter().any(|v| v.name.as_str() == g.interface);
        if !known {
            err(
                format!("multicast.groups[{i}].interface"),
                format!("{:?} is neither an interface label nor a VLAN name", g.interface),
            );
        }
    }
    let mut srt_names = BTreeSet::new();
    for (i, s) in raw.srt.iter().enumerate() {
        if !srt_names.insert(s.name.as_str()) {
            err(format!("srt[{i}].name"), format!("{:?} is used twice", s.name.as_str()));
        }
        if let Some(ifc) = &s.interface
            && !(raw.interfaces.iter().any(|itf| itf.label.as_str() == ifc)
                || raw.vlans.iter().any(|v| v.name.as_str() == ifc))
        {
            err(
                format!("srt[{i}].interface"),
                format!("{ifc:?} is neither an interface label nor a VLAN name"),
            );
        }
        if s.listen_port == Some(0) {
            err(
                format!("srt[{i}].listen_port"),
                "0 is not a port: expected 1-65535".into(),
            );
        }
        if !s.stats_file.starts_with('/')
            || s.stats_file.chars().any(|c| c.is_control())
            || s.stats_file.split('/').any(|c| c == "..")
        {
            err(
                format!("srt[{i}].stats_file"),
                format!(
                    "{:?}: expected an absolute path (e.g. /run/flypack/srt/cam1.json)",
                    s.stats_file
                ),
            );
        }
    }
    if !(raw.qa.srt_bitrate_mbps > 0.0 && raw.qa.srt_bitrate_mbps <= 10_000.0) {
        err(
            "qa.srt_bitrate_mbps".into(),
            format!("{}: expected more than 0 and at most 10000", raw.qa.srt_bitrate_mbps),
        );
    }
    if raw.qa.settle_seconds > 600 {
        err(
            "qa.settle_seconds".into(),
            format!("{}: expected at most 600", raw.qa.settle_seconds),
        );
    }
    for (i, w) in raw.qa.waivers.iter().enumerate() {
        if crate::qa::CheckId::parse(&w.check).is_none() {
            let ids: Vec<&str> = crate::qa::CheckId::ALL.iter().map(|c| c.as_str()).collect();
            err(
                format!("qa.waivers[{i}].check"),
                format!("{:?} is not a QA check id: expected one of {}", w.check, ids.join(", ")),
            );
        }
        if w.reason.trim().len() < 5 {
            err(
                format!("qa.waivers[{i}].reason"),
                "give the reason for the waiver (it is shown with the verdict)".into(),
            );
        }
    }
    for (i, key) in raw.access.ssh_authorized_keys.iter().enumerate() {
        let kind = key.split_whitespace().next().unwrap_or("");
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || key.split_whitespace().count() < 2
            || key.chars().any(|c| c.is_control())
        {
            err(
                format!("access.ssh_authorized_keys[{i}]"),
                "not an SSH public key: expected one line \"TYPE BASE64 [comment]\"".into(),
            );
        }
    }
    if let Some(p) = raw.alerting.alertmanager.as_deref().and_then(alertmanager_problem) {
        err("alerting.alertmanager".into(), p);
    }
    if let Some(p) = raw.central.as_ref().and_then(|c| central_url_problem(&c.url)) {
        err("central.url".into(), p);
    }
    if errs.is_empty() {
        Ok(Unit(raw))
    } else {
        Err(ConfigErrors(errs))
    }
}

/// One DNS label (RFC 1123), lower case: 1-63 letters, digits and '-', not
/// starting or ending with '-'.
fn is_lower_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS name: dot-separated labels of letters, digits and '-' (at most 253
/// characters), as every generated file may carry it safely.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_addressing(
    err: &mut dyn FnMut(String, String),
    k: &str,
    dhcp: bool,
    addrs: &[IpCidr],
    gw: Option<IpAddr>,
    mtu: Option<u32>,
) {
    if !dhcp && addrs.is_empty() {
        err(
            format!("{k}.addresses"),
            "no address: give static addresses, or dhcp = true".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for (j, a) in addrs.iter().enumerate() {
        if !seen.insert(a.addr) {
            err(format!("{k}.addresses[{j}]"), format!("{} is listed twice", a.addr));
        }
    }
    if let Some(g) = gw {
        if addrs.iter().any(|a| a.addr == g) {
            err(format!("{k}.gateway"), format!("{g} is the interface's own address"));
        } else if !dhcp && !addrs.iter().any(|a| a.contains(g)) {
            err(
                format!("{k}.gateway"),
                format!(
                    "{g} is not in the subnet of any of the interface's addresses: add an address in its subnet or fix the gateway"
                ),
            );
        }
    }
    if let Some(m) = mtu
        && !(576..=9216).contains(&m)
    {
        err(format!("{k}.mtu"), format!("{m}: expected 576-9216"));
    }
}

/// Parses and validates a unit config.
pub fn parse_unit(file: &Path, text: &str) -> Result<Unit, ConfigErrors> {
    let raw: RawUnit = parse_toml(file, text).map_err(|e| ConfigErrors(vec![e]))?;
    validate(file, "", raw)
}

/// One unit of a fleet inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetUnit {
    /// DMI system serial number (`/sys/class/dmi/id/product_serial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// MAC addresses; any of the unit's NICs matching one selects this entry.
    #[serde(default)]
    pub macs: Vec<MacAddr>,
    /// The unit's config.
    pub config: RawUnit,
}

/// A fleet inventory as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// [`FLEET_SCHEMA`].
    pub version: u32,
    /// The flypack's name (lower-case letters, digits, '-'): its group in the
    /// fleet's Ansible inventory (`builder inventory`). Firstboot ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flypack: Option<String>,
    /// Units.
    #[serde(default)]
    pub units: Vec<FleetUnit>,
}

/// A validated fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The flypack's name, when the file gives one.
    pub flypack: Option<String>,
    /// Entries: (serial, macs, config).
    pub units: Vec<(Option<String>, Vec<MacAddr>, Unit)>,
}

/// What identifies the hardware firstboot runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hardware {
    /// DMI serial, if the firmware has a real one.
    pub serial: Option<String>,
    /// MACs of the physical NICs.
    pub macs: Vec<String>,
}

/// Why a fleet entry was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetMatch {
    /// By DMI serial.
    Serial(String),
    /// By a NIC's MAC.
    Mac(String),
}

impl Fleet {
    /// The entry for this hardware: serial first, then MACs.
    pub fn find(&self, hw: &Hardware) -> Option<(&Unit, FleetMatch)> {
        if let Some(s) = &hw.serial
            && let Some((_, _, u)) = self.units.iter().find(|(sn, _, _)| sn.as_deref() == Some(s.as_str()))
        {
            return Some((u, FleetMatch::Serial(s.clone())));
        }
        for m in &hw.macs {
            let m = m.to_ascii_lowercase();
            if let Some((_, _, u)) = self
                .units
                .iter()
                .find(|(_, macs, _)| macs.iter().any(|x| x.as_str() == m))
            {
                return Some((u, FleetMatch::Mac(m)));
            }
        }
        None
    }
}

/// A flypack's name: 1 to 32 lower-case letters, digits and '-', starting
/// with a letter.
pub fn valid_flypack_name(n: &str) -> bool {
    (1..=32).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parses and validates a fleet inventory.
pub fn parse_fleet(file: &Path, text: &str) -> Result<Fleet, ConfigErrors> {
    let raw: RawFleet = parse_toml(file, text).map_err(|e| ConfigErrors(vec![e]))?;
    let mut errs = Vec::new();
    if raw.version != FLEET_SCHEMA {
        errs.push(ConfigError::new(
            file,
            "version",
            format!("expected {FLEET_SCHEMA}, found {}", raw.version),
        ));
    }
    if let Some(n) = &raw.flypack
        && !valid_flypack_name(n)
    {
        errs.push(ConfigError::new(
            file,
            "flypack",
            format!(
                "{n:?}: expected 1 to 32 lower-case letters, digits and '-', starting with a letter (e.g. \"truck-a\")"
            ),
        ));
    }
    let mut serials = BTreeSet::new();
    let mut macs = BTreeSet::new();
    let mut hostnames = BTreeSet::new();
    let mut units = Vec::new();
    for (i, u) in raw.units.into_iter().enumerate() {
        let k = format!("units[{i}]");
        if u.serial.is_none() && u.macs.is_empty() {
            errs.push(ConfigError::new(
                file,
                k.clone(),
                "expected serial or macs to match the unit by".to_string(),
            ));
        }
        if let Some(s) = &u.serial
            && !serials.insert(s.clone())
        {
            errs.push(ConfigError::new(
                file,
                format!("{k}.serial"),
                format!("{s:?} is listed for two units"),
            ));
        }
        for (j, m) in u.macs.iter().enumerate() {
            if !macs.insert(m.clone()) {
                errs.push(ConfigError::new(
                    file,
                    format!("{k}.macs[{j}]"),
                    format!("{m} is listed for two units"),
                ));
            }
        }
        if !hostnames.insert(u.config.hostname.clone()) {
            errs.push(ConfigError::new(
                file,
                format!("{k}.config.hostname"),
                format!("{:?} is used by two units", u.config.hostname.as_str()),
            ));
        }
        match validate(file, &format!("{k}.config."), u.config) {
            Ok(unit) => units.push((u.serial, u.macs, unit)),
            Err(e) => errs.extend(e.0),
        }
    }
    if errs.is_empty() {
        Ok(Fleet {
            flypack: raw.flypack,
            units,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

#[cfg(test)]
mod tests;

//! mDNS name resolution, on the wire as Dapr's `nameresolution.mdns` component does it, so a
//! real Dapr daprd finds us and we find it (selected by Configuration
//! `spec.nameResolution.component: mdns`).
//!
//! Dapr's records, for app id `orders` (one set per sidecar):
//! - the service type is the app id itself in `local.`: `orders.local.` (not the usual
//!   `_name._tcp.local.` form, which is why general-purpose DNS-SD crates such as `mdns-sd`,
//!   that refuse other service types, cannot talk to Dapr);
//! - the instance is `<hostname>:<pid>`: `PTR orders.local. -> <hostname>:<pid>.orders.local.`;
//! - `SRV <instance> -> <hostname>.local.:<internal gRPC port>`, `TXT <instance> = ["orders"]`
//!   (a resolver ignores an instance whose TXT strings are not exactly the app id), and
//!   `A`/`AAAA <hostname>.local.` with the announced host address;
//! - a resolver sends a multicast `PTR orders.local.` query, takes an answer only when one
//!   packet carries the SRV, the TXT and an address of the instance, and keeps each address for
//!   60 s (Dapr's `addressTTL`), choosing among several round-robin. Namespaces play no part.
//!
//! We answer queries for our own names with one multicast packet holding all four records
//! (Dapr's client, like ours, associates the records of one packet only), announce ourselves
//! once when the internal server listens, and resolve by querying and waiting up to
//! [`BROWSE_TIMEOUT`], asking again every [`QUERY_INTERVAL`]. A resolved address is forgotten
//! when a call to it fails ([`Mdns::forget`]). An instance's goodbye (TTL 0) removes it.
//!
//! Sockets: UDP `0.0.0.0:5353` shared with other responders on the machine (`SO_REUSEADDR`,
//! `SO_REUSEPORT`), joined to `224.0.0.251` on the interface of the default route and on
//! loopback; multicast loop is on, so sidecars on one machine hear each other. IPv4 only.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simple_dns::rdata::{A, AAAA, PTR, RData, SRV, TXT};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, Question, ResourceRecord, TYPE};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

/// The mDNS group and port.
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const MDNS_PORT: u16 = 5353;
/// How long a resolved address is used without asking again (Dapr's `addressTTL`).
pub const ADDRESS_TTL: Duration = Duration::from_secs(60);
/// How long a resolution waits for an answer.
pub const BROWSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a waiting resolution asks again.
pub const QUERY_INTERVAL: Duration = Duration::from_millis(400);
/// The TTL of the records we announce (seconds).
const RECORD_TTL: u32 = 120;

/// Why mDNS could not start or resolve.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error(
        "app id {0:?} was not found by mDNS within {BROWSE_TIMEOUT:?} (is its daprd running with mDNS name resolution on this network, and does multicast reach it?)"
    )]
    NotFound(String),
    #[error("mDNS: {0}")]
    Io(#[from] std::io::Error),
}

/// What we announce.
#[derive(Debug, Clone)]
struct Announcement {
    app_id: String,
    /// `<hostname>:<pid>`.
    instance: String,
    /// `<hostname>` (without `.local`).
    host: String,
    ip: IpAddr,
    port: u16,
}

impl Announcement {
    fn service(&self) -> String {
        format!("{}.local", self.app_id)
    }
    fn instance_name(&self) -> String {
        format!("{}.{}.local", self.instance, self.app_id)
    }
    fn host_name(&self) -> String {
        format!("{}.local", self.host)
    }
}

#[derive(Debug, Default)]
struct Found {
    /// Address to `(instance, expiry)`.
    addresses: Vec<(String, String, Instant)>,
    next: usize,
}

#[derive(Debug, Default)]
struct State {
    announced: Option<Announcement>,
    /// App id (lower case) to the addresses heard.
    found: HashMap<String, Found>,
}

/// An mDNS responder and resolver (one per sidecar).
#[derive(Debug)]
pub struct Mdns {
    socket: Arc<UdpSocket>,
    /// The same socket for sends outside the runtime (announcement, goodbye): Tokio's
    /// `try_send_to` fails with `WouldBlock` until the socket was seen writable.
    sync: std::net::UdpSocket,
    state: Arc<Mutex<State>>,
    heard: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.task.abort();
        // A goodbye, so resolvers forget us at once.
        let announced = self.lock().announced.clone();
        if let Some(a) = announced
            && let Some(packet) = response(&a, &[], true, None, 0)
        {
            let _ = self.socket.try_send_to(
                &packet,
                SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, MDNS_PORT)),
            );
        }
    }
}

fn group() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(MDNS_GROUP, MDNS_PORT))
}

/// The shared mDNS socket.
fn bind() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(255)?;
    // The default route's interface (where other machines are), and loopback (always there;
    // the only one on a machine without a network).
    let routed = socket.join_multicast_v4(&MDNS_GROUP, &Ipv4Addr::UNSPECIFIED);
    let lo = socket.join_multicast_v4(&MDNS_GROUP, &Ipv4Addr::LOCALHOST);
    match (&routed, &lo) {
        (Err(e), Err(_)) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot join the mDNS group {MDNS_GROUP} on any interface: {e}"),
            ));
        }
        (Err(e), Ok(())) => {
            tracing::warn!(error = %e, "mDNS: no multicast route; only sidecars on this machine (loopback) can be found");
            socket.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        }
        _ => {}
    }
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

impl Mdns {
    /// Binds the mDNS socket and starts answering and listening (needs a Tokio runtime).
    pub fn start() -> Result<Arc<Mdns>, MdnsError> {
        let std_socket = bind()?;
        let sync = std_socket.try_clone()?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let state = Arc::new(Mutex::new(State::default()));
        let heard = Arc::new(Notify::new());
        let task = tokio::spawn(receive(socket.clone(), state.clone(), heard.clone()));
        Ok(Arc::new(Mdns {
            socket,
            sync,
            state,
            heard,
            task,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces `app_id` at `address` (`ip:port`, our internal server).
    pub fn announce(&self, app_id: &str, address: SocketAddr) -> std::io::Result<()> {
        let host = hostname();
        let announcement = Announcement {
            app_id: app_id.to_owned(),
            instance: format!("{host}:{}", std::process::id()),
            host,
            ip: address.ip(),
            port: address.port(),
        };
        tracing::info!(app_id, %address, instance = %announcement.instance_name(), "mDNS: announcing");
        let packet = response(&announcement, &[], true, None, RECORD_TTL);
        self.lock().announced = Some(announcement);
        if let Some(packet) = packet {
            self.sync.send_to(&packet, group())?;
        }
        Ok(())
    }

    /// The address of a sidecar of `app_id`: one heard within [`ADDRESS_TTL`], else asks.
    pub async fn resolve(&self, app_id: &str) -> Result<String, MdnsError> {
        let key = app_id.to_ascii_lowercase();
        let deadline = tokio::time::Instant::now() + BROWSE_TIMEOUT;
        let mut next_query = tokio::time::Instant::now();
        loop {
            let heard = self.heard.notified();
            if let Some(address) = self.cached(&key) {
                return Ok(address);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(MdnsError::NotFound(app_id.to_owned()));
            }
            if now >= next_query {
                self.query(app_id).await?;
                next_query = now + QUERY_INTERVAL;
            }
            let _ = tokio::time::timeout_at(next_query.min(deadline), heard).await;
        }
    }

    /// Forgets the addresses heard for `app_id` (after a failed call).
    pub fn forget(&self, app_id: &str) {
        self.lock().found.remove(&app_id.to_ascii_lowercase());
    }

    fn cached(&self, key: &str) -> Option<String> {
        let mut state = self.lock();
        let found = state.found.get_mut(key)?;
        let now = Instant::now();
        found.addresses.retain(|(_, _, expires)| *expires > now);
        if found.addresses.is_empty() {
            return None;
        }
        found.next = (found.next + 1) % found.addresses.len();
        Some(found.addresses[found.next].0.clone())
    }

    async fn query(&self, app_id: &str) -> std::io::Result<()> {
        let service = format!("{app_id}.local");
        let mut packet = Packet::new_query(0);
        packet.questions.push(Question::new(
            Name::new_unchecked(&service),
            QTYPE::TYPE(TYPE::PTR),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let bytes = packet
            .build_bytes_vec_compressed()
            .map_err(|e| std::io::Error::other(format!("cannot build an mDNS query: {e}")))?;
        self.socket.send_to(&bytes, group()).await?;
        Ok(())
    }
}

/// The machine's host name, first label only (Dapr uses `os.Hostname()`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().split('.').next().unwrap_or_default().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Our records as a response packet: `questions` echoed (legacy unicast), `id` kept; PTR in the
/// answers when `ptr`, SRV/TXT/address always (a goodbye has `ttl` 0).
fn response(
    a: &Announcement,
    questions: &[Question<'_>],
    ptr: bool,
    id: Option<u16>,
    ttl: u32,
) -> Option<Vec<u8>> {
    let service = a.service();
    let instance = a.instance_name();
    let host = a.host_name();
    let mut packet = Packet::new_reply(id.unwrap_or(0));
    packet.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    packet.questions.extend(questions.iter().cloned());
    if ptr {
        packet.answers.push(ResourceRecord::new(
            Name::new_unchecked(&service),
            CLASS::IN,
            ttl,
            RData::PTR(PTR(Name::new_unchecked(&instance))),
        ));
    }
    packet.answers.push(
        ResourceRecord::new(
            Name::new_unchecked(&instance),
            CLASS::IN,
            ttl,
            RData::SRV(SRV {
                priority: 0,
                weight: 0,
                port: a.port,
                target: Name::new_unchecked(&host),
            }),
        )
        .with_cache_flush(id.is_none()),
    );
    let txt = TXT::new().with_string(&a.app_id).ok()?;
    packet.answers.push(
        ResourceRecord::new(
            Name::new_unchecked(&instance),
            CLASS::IN,
            ttl,
            RData::TXT(txt),
        )
        .with_cache_flush(id.is_none()),
    );
    let address = match a.ip {
        IpAddr::V4(ip) => RData::A(A {
            address: u32::from(ip),
        }),
        IpAddr::V6(ip) => RData::AAAA(AAAA {
            address: u128::from(ip),
        }),
    };
    packet.additional_records.push(ResourceRecord::new(
        Name::new_unchecked(&host),
        CLASS::IN,
        ttl,
        address,
    ));
    packet.build_bytes_vec_compressed().ok()
}

fn same(name: &Name<'_>, text: &str) -> bool {
    name.to_string()
        .trim_end_matches('.')
        .eq_ignore_ascii_case(text.trim_end_matches('.'))
}

async fn receive(socket: Arc<UdpSocket>, state: Arc<Mutex<State>>, heard: Arc<Notify>) {
    let mut buf = vec![0u8; 9000];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%error, "mDNS: receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(packet) = Packet::parse(&buf[..len]) else {
            continue;
        };
        if packet.has_flags(PacketFlag::RESPONSE) {
            if learn(&packet, &state) {
                heard.notify_waiters();
            }
        } else {
            let announced = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .announced
                .clone();
            if let Some(a) = announced
                && let Some((reply, to)) = answer(&a, &packet, from)
                && let Err(error) = socket.send_to(&reply, to).await
            {
                tracing::debug!(%error, "mDNS: failed to answer a query");
            }
        }
    }
}

/// Our answer to a query, and where to send it (the group; the asker for a legacy query from
/// a port other than 5353).
fn answer(a: &Announcement, query: &Packet<'_>, from: SocketAddr) -> Option<(Vec<u8>, SocketAddr)> {
    let wanted =
        |q: &Question<'_>, ty: TYPE| matches!(q.qtype, QTYPE::ANY) || q.qtype == QTYPE::TYPE(ty);
    let mut ours = false;
    let mut ptr = false;
    for q in &query.questions {
        if same(&q.qname, &a.service()) && wanted(q, TYPE::PTR) {
            ours = true;
            ptr = true;
        } else if (same(&q.qname, &a.instance_name())
            && (wanted(q, TYPE::SRV) || wanted(q, TYPE::TXT)))
            || (same(&q.qname, &a.host_name()) && (wanted(q, TYPE::A) || wanted(q, TYPE::AAAA)))
        {
            ours = true;
        }
    }
    if !ours {
        return None;
    }
    if from.port() != MDNS_PORT {
        let packet = response(a, &query.questions, ptr, Some(query.id()), RECORD_TTL)?;
        return Some((packet, from));
    }
    Some((response(a, &[], ptr, None, RECORD_TTL)?, group()))
}

/// Takes the instances a response describes completely (SRV, TXT naming the app id, and an
/// address, all in this packet); returns whether anything changed.
fn learn(packet: &Packet<'_>, state: &Mutex<State>) -> bool {
    let records: Vec<&ResourceRecord<'_>> = packet
        .answers
        .iter()
        .chain(&packet.name_servers)
        .chain(&packet.additional_records)
        .collect();
    let mut changed = false;
    for srv_record in &records {
        let RData::SRV(srv) = &srv_record.rdata else {
            continue;
        };
        let labels: Vec<String> = srv_record
            .name
            .get_labels()
            .iter()
            .map(|l| l.to_string())
            .collect();
        if labels.len() < 3 || !labels[labels.len() - 1].eq_ignore_ascii_case("local") {
            continue;
        }
        let app_id = labels[labels.len() - 2].clone();
        let instance = srv_record.name.to_string();
        let txt_ok = records.iter().any(|r| {
            r.name == srv_record.name
                && matches!(&r.rdata, RData::TXT(txt)
                    if txt.iter_raw().count() > 0
                        && txt.iter_raw().all(|(k, v)| v.is_none() && k == app_id.as_bytes()))
        });
        if !txt_ok {
            continue;
        }
        let ip = records.iter().find_map(|r| {
            if r.name != srv.target {
                return None;
            }
            match &r.rdata {
                RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                RData::AAAA(a) => Some(IpAddr::V6(std::net::Ipv6Addr::from(a.address))),
                _ => None,
            }
        });
        let key = app_id.to_ascii_lowercase();
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let found = state.found.entry(key).or_default();
        found.addresses.retain(|(_, i, _)| *i != instance);
        if srv_record.ttl == 0 {
            changed = true;
            continue;
        }
        let Some(ip) = ip else { continue };
        let address = SocketAddr::new(ip, srv.port).to_string();
        found
            .addresses
            .push((address, instance, Instant::now() + ADDRESS_TTL));
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement() -> Announcement {
        Announcement {
            app_id: "orders".into(),
            instance: "box:42".into(),
            host: "box".into(),
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            port: 50002,
        }
    }

    #[test]
    fn records_are_dapr_shaped_and_learnt_back() {
        let a = announcement();
        let bytes = response(&a, &[], true, None, RECORD_TTL).unwrap();
        let packet = Packet::parse(&bytes).unwrap();
        assert!(packet.has_flags(PacketFlag::RESPONSE));
        let ptr = packet
            .answers
            .iter()
            .find_map(|r| match &r.rdata {
                RData::PTR(p) if same(&r.name, "orders.local") => Some(p.0.to_string()),
                _ => None,
            })
            .unwrap();
        assert_eq!(ptr, "box:42.orders.local");
        let state = Mutex::new(State::default());
        assert!(learn(&packet, &state));
        let address = state.lock().unwrap().found["orders"].addresses[0].0.clone();
        assert_eq!(address, "127.0.0.1:50002");

        // A goodbye removes it.
        let bye = response(&a, &[], true, None, 0).unwrap();
        assert!(learn(&Packet::parse(&bye).unwrap(), &state));
        assert!(state.lock().unwrap().found["orders"].addresses.is_empty());
    }

    #[test]
    fn queries_for_our_names_are_answered_others_not() {
        let a = announcement();
        let query = |name: &'static str, ty: TYPE| {
            let mut p = Packet::new_query(7);
            p.questions.push(Question::new(
                Name::new_unchecked(name),
                QTYPE::TYPE(ty),
                simple_dns::QCLASS::CLASS(CLASS::IN),
                false,
            ));
            p.build_bytes_vec().unwrap()
        };
        let mdns_peer: SocketAddr = "192.0.2.9:5353".parse().unwrap();
        let legacy_peer: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let bytes = query("ORDERS.local", TYPE::PTR);
        let (_, to) = answer(&a, &Packet::parse(&bytes).unwrap(), mdns_peer).unwrap();
        assert_eq!(to, group());
        let (reply, to) = answer(&a, &Packet::parse(&bytes).unwrap(), legacy_peer).unwrap();
        assert_eq!(to, legacy_peer);
        assert_eq!(Packet::parse(&reply).unwrap().id(), 7);
        let bytes = query("box:42.orders.local", TYPE::SRV);
        assert!(answer(&a, &Packet::parse(&bytes).unwrap(), mdns_peer).is_some());
        for (name, ty) in [("payments.local", TYPE::PTR), ("orders.local", TYPE::A)] {
            let bytes = query(name, ty);
            assert!(answer(&a, &Packet::parse(&bytes).unwrap(), mdns_peer).is_none());
        }
    }

    #[test]
    fn an_instance_without_the_app_id_in_txt_is_ignored() {
        let a = announcement();
        let mut other = a.clone();
        other.app_id = "payments".into();
        // Records for orders, but TXT says payments: Dapr skips such an entry, so do we.
        let bytes = response(&other, &[], true, None, RECORD_TTL).unwrap();
        let mut packet = Packet::parse(&bytes).unwrap();
        for r in packet.answers.iter_mut() {
            if matches!(r.rdata, RData::SRV(_)) {
                r.name = Name::new_unchecked("box:42.orders.local");
            }
        }
        let state = Mutex::new(State::default());
        assert!(!learn(&packet, &state));
        assert!(state.lock().unwrap().found.is_empty());
    }
}

//! QUIC-LB routable connection IDs, plaintext algorithm (draft-ietf-quic-load-balancers-21).
//!
//! Every connection ID issued under a QUIC-LB configuration has this layout:
//!
//! ```text
//! QUIC-LB Connection ID {
//!   First Octet {
//!     Config Rotation (3),
//!     CID Len or Random Bits (5),
//!   },
//!   Server ID (8..120),
//!   Nonce (32..144),
//! }
//! ```
//!
//! Server ID and nonce together take at most 19 octets, so that the whole ID fits the
//! 20-octet limit of QUIC version 1. Config rotation `0b111` is reserved for IDs that a
//! load balancer cannot route and must send by 4-tuple instead.
//!
//! The plaintext algorithm leaves the server ID readable by anyone on the path: an observer
//! learns which server holds a connection, though not which connection IDs belong
//! together, since the nonces are unlinkable. The draft's encrypted variants (AES-128-ECB,
//! single pass or a four-round Feistel network) are not implemented here.
//!
//! [`QuicLbConfig`] encodes and decodes without I/O; [`QuicLbGenerator`] adds nonce
//! bookkeeping and plugs into quinn as its [`ConnectionIdGenerator`].

use std::fmt;
use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The longest connection ID QUIC version 1 allows, in octets.
pub const MAX_CID_LEN: usize = 20;

/// The longest server ID a configuration can hold: 19 octets after the first one, less the
/// shortest nonce.
pub const MAX_SERVER_ID_LEN: usize = MAX_CID_LEN - 1 - MIN_NONCE_LEN;

/// The shortest nonce the draft allows, in octets.
pub const MIN_NONCE_LEN: usize = 4;

/// The bits of the first octet that hold the config rotation codepoint.
const ROTATION_SHIFT: u32 = 5;

/// The low bits of the first octet: the self-encoded length, or random bits.
const LOW_BITS: u8 = 0b1_1111;

/// A QUIC-LB configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicLbError {
    /// Config rotation codepoints are 0 to 6; 7 (`0b111`) marks unroutable IDs.
    #[error("config rotation {0} is out of range (0 to 6)")]
    ConfigRotation(u8),
    /// The server ID is empty or longer than [`MAX_SERVER_ID_LEN`] octets.
    #[error("server ID of {0} octets is out of range (1 to {MAX_SERVER_ID_LEN})")]
    ServerIdLength(usize),
    /// The nonce is shorter than [`MIN_NONCE_LEN`] octets.
    #[error("nonce of {0} octets is too short (at least {MIN_NONCE_LEN})")]
    NonceLength(usize),
    /// Server ID and nonce together exceed 19 octets.
    #[error("server ID and nonce take {0} octets, more than the 19 a connection ID leaves")]
    TooLong(usize),
    /// A nonce handed to [`QuicLbConfig::encode`] does not have the configured length.
    #[error("nonce of {found} octets does not match the configured {expected}")]
    NonceMismatch {
        /// The configured nonce length.
        expected: usize,
        /// The length handed in.
        found: usize,
    },
}

/// A connection ID does not belong to a QUIC-LB configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The connection ID is empty.
    #[error("empty connection ID")]
    Empty,
    /// The config rotation bits are `0b111`: the issuer had no configuration.
    #[error("unroutable connection ID (config rotation 0b111)")]
    Unroutable,
    /// The config rotation bits name another configuration.
    #[error("config rotation {found} does not match {expected}")]
    ConfigRotation {
        /// This configuration's codepoint.
        expected: u8,
        /// The codepoint in the connection ID.
        found: u8,
    },
    /// The connection ID is not as long as this configuration's IDs.
    #[error("connection ID of {found} octets, expected {expected}")]
    Length {
        /// This configuration's connection ID length.
        expected: usize,
        /// The length of the connection ID.
        found: usize,
    },
    /// The self-encoded length in the first octet disagrees with the actual length.
    #[error("first octet encodes a length of {encoded}, but {actual} octets follow it")]
    SelfEncodedLength {
        /// The low five bits of the first octet.
        encoded: u8,
        /// The octets after the first one.
        actual: usize,
    },
    /// The connection ID routes to another server.
    #[error("connection ID carries another server's ID")]
    ServerId,
}

/// A config rotation codepoint: the three most significant bits of a connection ID.
///
/// They let a load balancer run up to seven configurations at once, typically the old and
/// the new one while a new configuration rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigRotation(u8);

impl ConfigRotation {
    /// The reserved codepoint `0b111`: the issuer had no usable configuration, and load
    /// balancers route the packet by 4-tuple.
    pub const UNROUTABLE: ConfigRotation = ConfigRotation(0b111);

    /// A routable codepoint, 0 to 6.
    pub fn new(bits: u8) -> Result<Self, QuicLbError> {
        if bits < Self::UNROUTABLE.0 {
            Ok(Self(bits))
        } else {
            Err(QuicLbError::ConfigRotation(bits))
        }
    }

    /// The codepoint of a connection ID, or `None` if it is empty.
    pub fn of(cid: &[u8]) -> Option<Self> {
        cid.first().map(|b| Self(b >> ROTATION_SHIFT))
    }

    /// The codepoint as a number, 0 to 7.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether a load balancer can route by this codepoint (anything but `0b111`).
    pub fn is_routable(self) -> bool {
        self != Self::UNROUTABLE
    }
}

impl fmt::Display for ConfigRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#05b}", self.0)
    }
}

/// The parts of a connection ID that a load balancer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedCid<'a> {
    /// The configuration the ID was issued under.
    pub config_rotation: ConfigRotation,
    /// The server that issued it: the load balancer's routing key.
    pub server_id: &'a [u8],
    /// The octets that keep the issuer's IDs apart.
    pub nonce: &'a [u8],
}

/// How this server writes its identity into the connection IDs it issues, so that a
/// QUIC-LB load balancer (draft-ietf-quic-load-balancers) routes every packet of a
/// connection to it.
///
/// A load balancer in front of a fleet configured with the same config rotation, server ID
/// length and nonce length reads the server ID from the second octet on of each packet's
/// destination connection ID and forwards the packet to the server it assigned that ID
/// to. It needs no per-connection state, and the routing survives anything that changes
/// the client's address or port.
///
/// Without it the load balancer can only hash the 4-tuple. That works until the client's
/// address changes: after a NAT rebinding or a move from Wi-Fi to cellular, the
/// short-header packets of the live connection hash to another server, which does not
/// know the connection ID, drops the packets or answers with a stateless reset, and the
/// connection dies instead of migrating.
///
/// Every member of the fleet gets its own server ID (and each process or endpoint on a
/// machine its own, if they share a port). Cloud load balancers that speak QUIC-LB
/// typically assign 8-octet server IDs. This type implements the plaintext algorithm: the
/// server ID is visible on the wire, while nonces stay unlinkable.
///
/// ```
/// use ferrovia::fleet::QuicLbConfig;
///
/// let config = QuicLbConfig::new(0, &[0x0a, 0x00, 0x00, 0x07], 8)?;
/// let mut generator = config.generator();
/// let cid = generator.next_cid();
/// assert_eq!(cid.len(), config.cid_len());
/// assert_eq!(config.validate(&cid)?.server_id, config.server_id());
/// // With quinn: `endpoint_config.cid_generator(config.generator_factory());`
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct QuicLbConfig {
    config_rotation: ConfigRotation,
    server_id: [u8; MAX_SERVER_ID_LEN],
    server_id_len: u8,
    nonce_len: u8,
    encode_length: bool,
    cid_lifetime: Option<Duration>,
}

impl QuicLbConfig {
    /// A configuration with config rotation codepoint `config_rotation` (0 to 6), this
    /// server's `server_id` (1 to 15 octets) and `nonce_len` octets of nonce (at least 4;
    /// server ID and nonce together at most 19).
    ///
    /// The connection IDs self-encode their length in the first octet; see
    /// [`with_length_self_encoding`](Self::with_length_self_encoding).
    pub fn new(
        config_rotation: u8,
        server_id: &[u8],
        nonce_len: usize,
    ) -> Result<Self, QuicLbError> {
        let config_rotation = ConfigRotation::new(config_rotation)?;
        if server_id.is_empty() || server_id.len() > MAX_SERVER_ID_LEN {
            return Err(QuicLbError::ServerIdLength(server_id.len()));
        }
        if nonce_len < MIN_NONCE_LEN {
            return Err(QuicLbError::NonceLength(nonce_len));
        }
        let plaintext_len = server_id.len() + nonce_len;
        if plaintext_len > MAX_CID_LEN - 1 {
            return Err(QuicLbError::TooLong(plaintext_len));
        }
        let mut id = [0; MAX_SERVER_ID_LEN];
        id[..server_id.len()].copy_from_slice(server_id);
        Ok(Self {
            config_rotation,
            server_id: id,
            server_id_len: server_id.len() as u8,
            nonce_len: nonce_len as u8,
            encode_length: true,
            cid_lifetime: None,
        })
    }

    /// Whether the low five bits of the first octet carry the number of octets that follow
    /// it (the default), for hardware offloads that need to find a connection ID's end, or
    /// random bits. Load balancers do not care either way.
    pub fn with_length_self_encoding(mut self, encode: bool) -> Self {
        self.encode_length = encode;
        self
    }

    /// Retire every connection ID after `lifetime`, so that quinn issues fresh ones: how a
    /// fleet moves its live connections to a new configuration.
    pub fn with_cid_lifetime(mut self, lifetime: Duration) -> Self {
        self.cid_lifetime = Some(lifetime);
        self
    }

    /// The config rotation codepoint.
    pub fn config_rotation(&self) -> ConfigRotation {
        self.config_rotation
    }

    /// This server's ID.
    pub fn server_id(&self) -> &[u8] {
        &self.server_id[..self.server_id_len as usize]
    }

    /// The nonce length in octets.
    pub fn nonce_len(&self) -> usize {
        self.nonce_len as usize
    }

    /// The length of every connection ID: one octet, the server ID and the nonce.
    pub fn cid_len(&self) -> usize {
        1 + self.server_id_len as usize + self.nonce_len as usize
    }

    /// Whether the first octet self-encodes the length.
    pub fn encodes_length(&self) -> bool {
        self.encode_length
    }

    /// How long a connection ID stays in use, if limited.
    pub fn cid_lifetime(&self) -> Option<Duration> {
        self.cid_lifetime
    }

    /// The connection ID made of this configuration's first octet, server ID and `nonce`.
    ///
    /// `random_bits` fill the low five bits of the first octet when the length is not
    /// self-encoded (pass fresh random bits; they are ignored otherwise). The nonce must
    /// never repeat and must bear no visible relation to earlier ones:
    /// [`QuicLbGenerator`] takes care of both.
    pub fn encode(&self, nonce: &[u8], random_bits: u8) -> Result<ConnectionId, QuicLbError> {
        if nonce.len() != self.nonce_len() {
            return Err(QuicLbError::NonceMismatch {
                expected: self.nonce_len(),
                found: nonce.len(),
            });
        }
        let mut cid = [0; MAX_CID_LEN];
        cid[0] = self.first_octet(random_bits);
        let sid_end = 1 + self.server_id_len as usize;
        cid[1..sid_end].copy_from_slice(self.server_id());
        cid[sid_end..sid_end + nonce.len()].copy_from_slice(nonce);
        Ok(ConnectionId::new(&cid[..self.cid_len()]))
    }

    /// Reads a connection ID the way a load balancer with this configuration does: checks
    /// the config rotation, the length and (if self-encoded) the first octet's length, and
    /// returns the server ID whichever server it names.
    pub fn decode<'a>(&self, cid: &'a [u8]) -> Result<DecodedCid<'a>, CidError> {
        let rotation = ConfigRotation::of(cid).ok_or(CidError::Empty)?;
        if !rotation.is_routable() {
            return Err(CidError::Unroutable);
        }
        if rotation != self.config_rotation {
            return Err(CidError::ConfigRotation {
                expected: self.config_rotation.0,
                found: rotation.0,
            });
        }
        if cid.len() != self.cid_len() {
            return Err(CidError::Length {
                expected: self.cid_len(),
                found: cid.len(),
            });
        }
        if self.encode_length {
            check_encoded_length(cid)?;
        }
        let (server_id, nonce) = cid[1..].split_at(self.server_id_len as usize);
        Ok(DecodedCid {
            config_rotation: rotation,
            server_id,
            nonce,
        })
    }

    /// Checks that a connection ID was issued under this configuration by this server: as
    /// [`decode`](Self::decode), and the server ID must be this server's.
    ///
    /// A server should not answer packets for another server's connection IDs with a
    /// stateless reset: where the fleet shares its reset key, that reset would be valid and
    /// would kill a live connection on the sibling the packet was meant for.
    pub fn validate<'a>(&self, cid: &'a [u8]) -> Result<DecodedCid<'a>, CidError> {
        let decoded = self.decode(cid)?;
        if decoded.server_id != self.server_id() {
            return Err(CidError::ServerId);
        }
        Ok(decoded)
    }

    /// A connection ID generator for one quinn endpoint, with a fresh nonce sequence.
    pub fn generator(&self) -> QuicLbGenerator {
        QuicLbGenerator::new(self.clone())
    }

    /// The factory `quinn::EndpointConfig::cid_generator` takes: one
    /// [`QuicLbGenerator`] per endpoint.
    pub fn generator_factory(
        &self,
    ) -> impl Fn() -> Box<dyn ConnectionIdGenerator> + Send + Sync + 'static {
        let config = self.clone();
        move || Box::new(config.generator())
    }

    fn first_octet(&self, random_bits: u8) -> u8 {
        let low = if self.encode_length {
            (self.cid_len() - 1) as u8
        } else {
            random_bits & LOW_BITS
        };
        (self.config_rotation.0 << ROTATION_SHIFT) | low
    }
}

impl fmt::Debug for QuicLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLbConfig")
            .field("config_rotation", &self.config_rotation.0)
            .field("server_id", &Hex(self.server_id()))
            .field("nonce_len", &self.nonce_len)
            .field("encode_length", &self.encode_length)
            .field("cid_lifetime", &self.cid_lifetime)
            .finish()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn check_encoded_length(cid: &[u8]) -> Result<(), CidError> {
    let encoded = cid[0] & LOW_BITS;
    if encoded as usize != cid.len() - 1 {
        return Err(CidError::SelfEncodedLength {
            encoded,
            actual: cid.len() - 1,
        });
    }
    Ok(())
}

/// Issues QUIC-LB connection IDs for one quinn endpoint.
///
/// Nonces come from a counter that starts at a random value and is passed through a keyed
/// permutation (a four-round Feistel network over HMAC-SHA256, with a key that never leaves
/// the generator). Each nonce is therefore unique until the counter comes back to its
/// start, as the draft requires, yet an observer cannot tell how consecutive nonces
/// relate, as it requires for plaintext IDs.
///
/// Once every nonce has been used (after 2^32 IDs with a 4-octet nonce), the generator
/// issues unroutable IDs (config rotation `0b111`, self-encoded length), which load
/// balancers route by 4-tuple, and logs a warning: the fleet needs a new configuration.
///
/// Two generators with the same server ID keep separate counters; give each endpoint its
/// own server ID.
pub struct QuicLbGenerator {
    config: QuicLbConfig,
    nonces: NonceSequence,
    rng: SystemRandom,
}

impl QuicLbGenerator {
    /// A generator with a fresh random key and counter.
    pub fn new(config: QuicLbConfig) -> Self {
        let rng = SystemRandom::new();
        let nonces = NonceSequence::new(config.nonce_len(), &rng);
        Self {
            config,
            nonces,
            rng,
        }
    }

    /// The configuration IDs are issued under.
    pub fn config(&self) -> &QuicLbConfig {
        &self.config
    }

    /// The next connection ID.
    pub fn next_cid(&mut self) -> ConnectionId {
        let mut nonce = [0; MAX_CID_LEN];
        let nonce = &mut nonce[..self.config.nonce_len()];
        if !self.nonces.next(nonce) {
            return self.unroutable_cid();
        }
        let random_bits = if self.config.encode_length {
            0
        } else {
            let mut b = [0];
            fill(&self.rng, &mut b);
            b[0]
        };
        self.config
            .encode(nonce, random_bits)
            .expect("the nonce has the configured length")
    }

    /// Whether this generator could have issued `cid`: [`QuicLbConfig::validate`], plus the
    /// unroutable IDs it issues once its nonces have run out.
    pub fn validate(&self, cid: &[u8]) -> Result<(), CidError> {
        if self.nonces.exhausted()
            && ConfigRotation::of(cid) == Some(ConfigRotation::UNROUTABLE)
            && cid.len() == self.config.cid_len()
        {
            return check_encoded_length(cid);
        }
        self.config.validate(cid).map(|_| ())
    }

    fn unroutable_cid(&self) -> ConnectionId {
        let len = self.config.cid_len();
        let mut cid = [0; MAX_CID_LEN];
        fill(&self.rng, &mut cid[1..len]);
        cid[0] = (ConfigRotation::UNROUTABLE.0 << ROTATION_SHIFT) | (len - 1) as u8;
        ConnectionId::new(&cid[..len])
    }
}

impl fmt::Debug for QuicLbGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLbGenerator")
            .field("config", &self.config)
            .field("exhausted", &self.nonces.exhausted())
            .finish_non_exhaustive()
    }
}

impl ConnectionIdGenerator for QuicLbGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        self.next_cid()
    }

    fn cid_len(&self) -> usize {
        self.config.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.config.cid_lifetime
    }

    /// A short-header packet for a connection ID that is not this server's is dropped
    /// rather than answered with a stateless reset: with a reset key shared across a fleet,
    /// that reset would be valid and would end a sibling's live connection.
    fn validate(&self, cid: &ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        QuicLbGenerator::validate(self, cid).map_err(|_| quinn_proto::InvalidCid)
    }
}

fn fill(rng: &SystemRandom, out: &mut [u8]) {
    rng.fill(out)
        .expect("the operating system's random number generator failed");
}

/// Unique, unlinkable nonces: a counter from a random start, permuted under a secret key.
struct NonceSequence {
    key: hmac::Key,
    len: usize,
    /// The next counter value, below 2^(8 * len) when that fits in 128 bits.
    counter: u128,
    /// Nonces left before the counter is back at its start.
    remaining: u128,
    warned: bool,
}

/// Feistel rounds of the nonce permutation.
const ROUNDS: u8 = 4;

impl NonceSequence {
    fn new(len: usize, rng: &SystemRandom) -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, rng)
            .expect("the operating system's random number generator failed");
        let mut start = [0; 16];
        fill(rng, &mut start);
        let (mask, remaining) = if len < 16 {
            let space = 1u128 << (8 * len);
            (space - 1, space)
        } else {
            (u128::MAX, u128::MAX)
        };
        Self {
            key,
            len,
            counter: u128::from_be_bytes(start) & mask,
            remaining,
            warned: false,
        }
    }

    fn exhausted(&self) -> bool {
        self.remaining == 0
    }

    /// Writes the next nonce into `out` (`len` octets), or returns false once all are used.
    fn next(&mut self, out: &mut [u8]) -> bool {
        debug_assert_eq!(out.len(), self.len);
        if self.remaining == 0 {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    "QUIC-LB nonces exhausted; issuing unroutable connection IDs until the \
                     configuration is replaced"
                );
            }
            return false;
        }
        self.remaining -= 1;
        let value = self.counter;
        self.counter = if self.len < 16 {
            (value + 1) & ((1u128 << (8 * self.len)) - 1)
        } else {
            value.wrapping_add(1)
        };
        out.fill(0);
        let bytes = value.to_be_bytes();
        let n = self.len.min(16);
        out[self.len - n..].copy_from_slice(&bytes[16 - n..]);
        self.permute(out);
        true
    }

    /// An unbalanced Feistel network over the octets of `block`: each round XORs one part
    /// with a keyed hash of the other, so every round (and the whole) is a bijection.
    fn permute(&self, block: &mut [u8]) {
        let split = block.len() / 2;
        for round in 0..ROUNDS {
            let (left, right) = block.split_at_mut(split);
            if round % 2 == 0 {
                self.mix(round, left, right);
            } else {
                self.mix(round, right, left);
            }
        }
    }

    /// `target ^= HMAC(key, round || len || source)`, truncated.
    fn mix(&self, round: u8, source: &[u8], target: &mut [u8]) {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&[round, self.len as u8]);
        ctx.update(source);
        let tag = ctx.sign();
        for (t, m) in target.iter_mut().zip(tag.as_ref()) {
            *t ^= m;
        }
    }

    #[cfg(test)]
    fn unpermute(&self, block: &mut [u8]) {
        let split = block.len() / 2;
        for round in (0..ROUNDS).rev() {
            let (left, right) = block.split_at_mut(split);
            if round % 2 == 0 {
                self.mix(round, left, right);
            } else {
                self.mix(round, right, left);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // draft-ietf-quic-load-balancers-21, Appendix "Load Balancer Test Vectors",
    // "Unencrypted CIDs" ("In all cases, the server is configured to encode the CID
    // length"):
    //
    //   cr_bits sid nonce cid
    //   0 c4605e 4504cc4f 07c4605e4504cc4f
    //   1 350d28b420 3487d970b 20a350d28b4203487d970b

    #[test]
    fn draft_plaintext_vector_1() {
        let config = QuicLbConfig::new(0, &hex("c4605e"), 4).unwrap();
        let cid = config.encode(&hex("4504cc4f"), 0).unwrap();
        assert_eq!(&cid[..], &hex("07c4605e4504cc4f")[..]);

        let printed = hex("07c4605e4504cc4f");
        let decoded = config.validate(&printed).unwrap();
        assert_eq!(decoded.config_rotation.bits(), 0);
        assert_eq!(decoded.server_id, &hex("c4605e")[..]);
        assert_eq!(decoded.nonce, &hex("4504cc4f")[..]);
    }

    // The second vector is misprinted in every draft that carries it: its nonce has nine
    // hex digits, and its cid column is "2" + "0a" + sid + nonce, the first octet 0x2a
    // (config rotation 1, 10 octets following) written out as a nibble followed by the
    // length. Read literally as octets, the first octet 0x20 encodes a length of 0 with
    // 10 octets after it, which a length-checking decoder must refuse.
    #[test]
    fn draft_plaintext_vector_2_as_printed_is_refused() {
        let config = QuicLbConfig::new(1, &hex("350d28b420"), 5).unwrap();
        let printed = hex("20a350d28b4203487d970b");
        assert_eq!(printed.len(), 11);
        assert_eq!(ConfigRotation::of(&printed).unwrap().bits(), 1);
        assert_eq!(
            config.decode(&printed),
            Err(CidError::SelfEncodedLength {
                encoded: 0,
                actual: 10
            })
        );
    }

    // The second vector as intended: first octet 0x2a, the server ID in octets 1 to 5.
    // Nonce 3487d970b is read as 34 87 d9 70 0b.
    #[test]
    fn draft_plaintext_vector_2_as_intended() {
        let config = QuicLbConfig::new(1, &hex("350d28b420"), 5).unwrap();
        let cid = config.encode(&hex("3487d9700b"), 0).unwrap();
        assert_eq!(&cid[..], &hex("2a350d28b4203487d9700b")[..]);
        let decoded = config.decode(&cid).unwrap();
        assert_eq!(decoded.config_rotation.bits(), 1);
        assert_eq!(decoded.server_id, &hex("350d28b420")[..]);
    }

    #[test]
    fn round_trips_every_server_id_length() {
        for sid_len in 1..=MAX_SERVER_ID_LEN {
            for nonce_len in MIN_NONCE_LEN..=(MAX_CID_LEN - 1 - sid_len) {
                let server_id: Vec<u8> = (0..sid_len as u8).map(|i| 0xa0 ^ i).collect();
                let rotation = (sid_len % 7) as u8;
                for encode_length in [true, false] {
                    let config = QuicLbConfig::new(rotation, &server_id, nonce_len)
                        .unwrap()
                        .with_length_self_encoding(encode_length);
                    let mut generator = config.generator();
                    for _ in 0..4 {
                        let cid = generator.next_cid();
                        assert_eq!(cid.len(), 1 + sid_len + nonce_len);
                        assert_eq!(ConfigRotation::of(&cid).unwrap().bits(), rotation);
                        if encode_length {
                            assert_eq!((cid[0] & LOW_BITS) as usize, cid.len() - 1);
                        }
                        let decoded = config.validate(&cid).unwrap();
                        assert_eq!(decoded.server_id, &server_id[..]);
                        assert_eq!(decoded.nonce.len(), nonce_len);
                        assert!(generator.validate(&cid).is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn eight_octet_server_ids() {
        let config = QuicLbConfig::new(2, &hex("0123456789abcdef"), 8).unwrap();
        assert_eq!(config.cid_len(), 17);
        let cid = config.generator().next_cid();
        assert_eq!(cid[0], (2 << 5) | 16);
        assert_eq!(config.decode(&cid).unwrap().server_id, config.server_id());
    }

    #[test]
    fn rejects_wrong_config_rotation() {
        let ours = QuicLbConfig::new(0, &hex("c4605e"), 4).unwrap();
        let theirs = QuicLbConfig::new(1, &hex("c4605e"), 4).unwrap();
        let cid = theirs.generator().next_cid();
        assert_eq!(
            ours.validate(&cid),
            Err(CidError::ConfigRotation {
                expected: 0,
                found: 1
            })
        );
        let mut unroutable = ours.generator().next_cid();
        unroutable[0] |= 0b1110_0000;
        assert_eq!(ours.decode(&unroutable), Err(CidError::Unroutable));
        assert_eq!(ours.decode(&[]), Err(CidError::Empty));
    }

    #[test]
    fn rejects_wrong_length() {
        let config = QuicLbConfig::new(0, &hex("c4605e"), 4).unwrap();
        let cid = config.generator().next_cid();
        assert_eq!(
            config.validate(&cid[..7]),
            Err(CidError::Length {
                expected: 8,
                found: 7
            })
        );
        let mut longer = cid.to_vec();
        longer.push(0);
        assert_eq!(
            config.validate(&longer),
            Err(CidError::Length {
                expected: 8,
                found: 9
            })
        );
        let mut bad_octet = cid.to_vec();
        bad_octet[0] ^= 0b0000_0001;
        assert_eq!(
            config.validate(&bad_octet),
            Err(CidError::SelfEncodedLength {
                encoded: 6,
                actual: 7
            })
        );
        // Without self-encoding the low bits are random and not checked.
        let loose = config.clone().with_length_self_encoding(false);
        assert!(loose.validate(&bad_octet).is_ok());
    }

    #[test]
    fn rejects_other_servers() {
        let ours = QuicLbConfig::new(3, &hex("0001"), 6).unwrap();
        let sibling = QuicLbConfig::new(3, &hex("0002"), 6).unwrap();
        let cid = sibling.generator().next_cid();
        assert_eq!(ours.decode(&cid).unwrap().server_id, &hex("0002")[..]);
        assert_eq!(ours.validate(&cid), Err(CidError::ServerId));
    }

    #[test]
    fn rejects_bad_configurations() {
        assert_eq!(
            QuicLbConfig::new(7, &[1], 4),
            Err(QuicLbError::ConfigRotation(7))
        );
        assert_eq!(
            QuicLbConfig::new(0, &[], 4),
            Err(QuicLbError::ServerIdLength(0))
        );
        assert_eq!(
            QuicLbConfig::new(0, &[0; 16], 4),
            Err(QuicLbError::ServerIdLength(16))
        );
        assert_eq!(
            QuicLbConfig::new(0, &[1], 3),
            Err(QuicLbError::NonceLength(3))
        );
        assert_eq!(
            QuicLbConfig::new(0, &[0; 15], 5),
            Err(QuicLbError::TooLong(20))
        );
        assert!(QuicLbConfig::new(6, &[0; 15], 4).is_ok());
        let config = QuicLbConfig::new(0, &[1], 4).unwrap();
        assert_eq!(
            config.encode(&[0; 5], 0),
            Err(QuicLbError::NonceMismatch {
                expected: 4,
                found: 5
            })
        );
    }

    #[test]
    fn random_low_bits_without_self_encoding() {
        let config = QuicLbConfig::new(5, &[9], 4)
            .unwrap()
            .with_length_self_encoding(false);
        let mut generator = config.generator();
        let lows: HashSet<u8> = (0..256)
            .map(|_| generator.next_cid()[0] & LOW_BITS)
            .collect();
        assert!(lows.len() > 8, "low bits look constant: {lows:?}");
        assert_eq!(config.encode(&[0; 4], 0xff).unwrap()[0], (5 << 5) | 0x1f);
    }

    #[test]
    fn unique_over_100_000_ids() {
        // The shortest nonce: random 4-octet nonces would collide about once in 100,000.
        let config = QuicLbConfig::new(0, &hex("c4605e"), 4).unwrap();
        let mut generator = config.generator();
        let mut seen = HashSet::with_capacity(100_000);
        for _ in 0..100_000 {
            assert!(seen.insert(generator.next_cid()));
        }
    }

    #[test]
    fn nonce_permutation_is_a_bijection() {
        let rng = SystemRandom::new();
        // Exhaustively for two octets: 65,536 inputs, 65,536 distinct outputs.
        let sequence = NonceSequence::new(2, &rng);
        let mut seen = HashSet::new();
        for v in 0..=u16::MAX {
            let mut block = v.to_be_bytes();
            sequence.permute(&mut block);
            assert!(seen.insert(block));
        }
        // Invertible at every nonce length.
        for len in MIN_NONCE_LEN..=MAX_CID_LEN - 2 {
            let sequence = NonceSequence::new(len, &rng);
            let mut block = vec![0; len];
            fill(&rng, &mut block);
            let original = block.clone();
            sequence.permute(&mut block);
            assert_ne!(block, original);
            sequence.unpermute(&mut block);
            assert_eq!(block, original);
        }
    }

    #[test]
    fn long_nonces_count_without_wrapping() {
        let mut sequence = NonceSequence::new(18, &SystemRandom::new());
        let mut a = [0; 18];
        let mut b = [0; 18];
        assert!(sequence.next(&mut a));
        assert!(sequence.next(&mut b));
        assert_ne!(a, b);
    }

    #[test]
    fn exhausted_nonces_fall_back_to_unroutable_ids() {
        let config = QuicLbConfig::new(4, &hex("abcd"), 4).unwrap();
        let mut generator = config.generator();
        generator.nonces.remaining = 2;
        let first = generator.next_cid();
        let second = generator.next_cid();
        assert!(config.validate(&first).is_ok() && config.validate(&second).is_ok());
        assert!(generator.validate(&first).is_ok());

        let fallback = generator.next_cid();
        assert_eq!(fallback.len(), config.cid_len());
        assert_eq!(
            ConfigRotation::of(&fallback),
            Some(ConfigRotation::UNROUTABLE)
        );
        assert_eq!((fallback[0] & LOW_BITS) as usize, fallback.len() - 1);
        assert_eq!(config.validate(&fallback), Err(CidError::Unroutable));
        assert!(generator.validate(&fallback).is_ok());
        assert_ne!(generator.next_cid(), fallback);
    }

    #[test]
    fn plugs_into_quinn() {
        let config = QuicLbConfig::new(1, &hex("0a000007"), 8)
            .unwrap()
            .with_cid_lifetime(Duration::from_secs(600));
        let factory = config.generator_factory();
        let mut generator = factory();
        assert_eq!(generator.cid_len(), 13);
        assert_eq!(generator.cid_lifetime(), Some(Duration::from_secs(600)));
        let cid = generator.generate_cid();
        assert_eq!(config.validate(&cid).unwrap().server_id, config.server_id());
        let mut endpoint = quinn::EndpointConfig::default();
        endpoint.cid_generator(config.generator_factory());
    }

    #[test]
    fn formats() {
        let config = QuicLbConfig::new(1, &hex("0a0b"), 4).unwrap();
        assert!(format!("{config:?}").contains("server_id: 0a0b"));
        assert_eq!(ConfigRotation::UNROUTABLE.to_string(), "0b111");
        assert!(!ConfigRotation::UNROUTABLE.is_routable());
    }
}

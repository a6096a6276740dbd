//! Keys every member of a fleet shares, so that any member can answer for any other: the
//! stateless-reset key (a member that lost a connection's state resets it in a way the
//! client believes) and the address-validation token key (a Retry token one member issued
//! is accepted by another).

use ring::{hkdf, hmac};

/// The shared keys of a fleet, derived from one secret every member is configured with.
///
/// Without them each server makes random keys at start: a restarted member, or one that
/// receives a packet meant for a sibling, cannot reset the client's connection (the client
/// waits out its idle timeout), and a Retry token from one member fails on another.
///
/// **Use with [`QuicLbConfig`](super::QuicLbConfig) routing.** With a shared reset key, a
/// member that receives a short-header packet for a connection it does not hold answers
/// with a stateless reset the client accepts: if the load balancer misroutes a live
/// connection's packet, that reset kills the connection. QUIC-LB connection IDs keep
/// packets on the member that holds them, and members drop packets whose connection ID
/// names another server instead of resetting them.
#[derive(Clone)]
pub struct FleetKeys {
    reset: hmac::Key,
    token: hkdf::Prk,
}

impl std::fmt::Debug for FleetKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("FleetKeys(..)")
    }
}

/// The shortest secret accepted: 256 bits.
pub const MIN_SECRET_LEN: usize = 32;

/// A fleet secret shorter than [`MIN_SECRET_LEN`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a fleet secret needs at least {MIN_SECRET_LEN} bytes, got {0}")]
pub struct SecretTooShort(pub usize);

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl FleetKeys {
    /// Derives both keys from `secret` (at least 32 random bytes, the same on every member,
    /// kept like any other server secret) with HKDF-SHA256, one label per key.
    pub fn derive(secret: &[u8]) -> Result<Self, SecretTooShort> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretTooShort(secret.len()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ferrovia fleet keys").extract(secret);
        let expand = |label: &'static [u8]| -> [u8; 32] {
            let mut out = [0u8; 32];
            prk.expand(&[label], Len(32))
                .and_then(|okm| okm.fill(&mut out))
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        let reset = expand(b"stateless reset");
        let token = expand(b"address validation token");
        Ok(Self {
            reset: hmac::Key::new(hmac::HMAC_SHA256, &reset),
            token: hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&token),
        })
    }

    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        quinn::EndpointConfig::new(std::sync::Arc::new(self.reset.clone()))
    }

    pub(crate) fn token_key(&self) -> std::sync::Arc<hkdf::Prk> {
        std::sync::Arc::new(self.token.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_and_the_debug_form_hides_the_keys() {
        assert_eq!(FleetKeys::derive(&[7; 31]).unwrap_err(), SecretTooShort(31));
        let keys = FleetKeys::derive(&[7; 32]).unwrap();
        assert_eq!(format!("{keys:?}"), "FleetKeys(..)");
    }

    #[test]
    fn the_same_secret_gives_the_same_reset_tokens_and_another_does_not() {
        use quinn_proto::crypto::HmacKey;
        let sign = |secret: &[u8]| {
            let keys = FleetKeys::derive(secret).unwrap();
            let mut out = vec![0u8; keys.reset.signature_len()];
            keys.reset.sign(b"connection id", &mut out);
            out
        };
        assert_eq!(sign(&[1; 32]), sign(&[1; 32]));
        assert_ne!(sign(&[1; 32]), sign(&[2; 32]));
    }
}

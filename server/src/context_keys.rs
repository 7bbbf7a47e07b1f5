//! The keys version contexts are signed and verified with (the context format and its MACs
//! are in `common/src/context.rs`; why contexts are signed is said there).
//!
//! Each node makes its own keys: 32 random bytes and a random id, kept in its member record
//! (`membership_state::MemberRecord::context_keys`), which gossip carries to every node and
//! the membership view stores in the data directory (mode 0600). A node signs with its newest
//! key that gossip has announced to the other nodes (`Membership::announced_keys`) and makes
//! a new one every `cluster.context_key_rotation_ms` (7 days by default); a key
//! stays valid for `cluster.context_key_grace_ms` (7 days) after the next one of its node was
//! made, so a context a client keeps for a while still works after a rotation, and at most
//! [`MAX_CONTEXT_KEYS`](crate::membership_state::MAX_CONTEXT_KEYS) keys a node are ever kept.
//!
//! Why per-node keys and not one cluster key: nodes that start at once (a static member list)
//! would otherwise each make "the" key and have to pick one, refusing for a moment contexts
//! made under the others. With a key per node, every key ever used stays valid for its grace
//! period wherever gossip took it, and a node that meets a key it has not learnt yet asks its
//! signer (`Coordinator::learn_context_keys`). Keys of removed members verify nothing.

use std::collections::HashMap;

use dynamokv_common::context::{ContextKey, ContextKeys, KeyLookup, SECRET_LEN};

use crate::membership_state::MembershipState;

/// The context keys of a membership view.
#[derive(Debug, Default)]
pub struct Keyring {
    /// (signer, key id) to the secret and when it stops verifying (ms since the epoch;
    /// `None`: its signer's newest key).
    keys: HashMap<(String, u64), Key>,
    /// This node's own keys, with when each was made, oldest first.
    own: Vec<(u64, ContextKey)>,
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    secret: [u8; SECRET_LEN],
    valid_until_ms: Option<u64>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("valid_until_ms", &self.valid_until_ms)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keys of every member of `state` that is not removed; `self_id` signs with its
    /// newest. A key stops verifying `grace_ms` after the next key of its member was made.
    pub fn of_state(state: &MembershipState, self_id: &str, grace_ms: u64) -> Keyring {
        let mut ring = Keyring::default();
        for m in state.members() {
            if state.is_removed(&m.id) {
                continue;
            }
            let keys = &m.context_keys;
            for (i, k) in keys.iter().enumerate() {
                let valid_until_ms = keys
                    .get(i + 1)
                    .map(|next| next.created_ms.saturating_add(grace_ms));
                ring.keys.insert(
                    (m.id.clone(), k.id),
                    Key {
                        secret: k.secret,
                        valid_until_ms,
                    },
                );
            }
            if m.id == self_id {
                ring.own = keys
                    .iter()
                    .map(|k| {
                        let key = ContextKey {
                            signer: m.id.clone(),
                            id: k.id,
                            secret: k.secret,
                        };
                        (k.created_ms, key)
                    })
                    .collect();
            }
        }
        ring
    }

    /// This node's newest key (none before its record has one).
    pub fn signing(&self) -> Option<&ContextKey> {
        self.own.last().map(|(_, k)| k)
    }

    /// The key this node signs contexts with when the keys it made up to `announced_ms` have
    /// reached the other nodes (`Membership::announced_keys`): the newest of those, or its
    /// newest key when none has.
    pub fn signing_as_of(&self, announced_ms: u64) -> Option<&ContextKey> {
        self.own
            .iter()
            .rev()
            .find(|(created, _)| *created <= announced_ms)
            .or(self.own.last())
            .map(|(_, k)| k)
    }

    /// The keys as they verify at `now_ms` (ms since the epoch).
    pub fn at(&self, now_ms: u64) -> KeysAt<'_> {
        KeysAt { ring: self, now_ms }
    }

    /// Whether any key of `signer` is known.
    pub fn knows_signer(&self, signer: &str) -> bool {
        self.keys.keys().any(|(s, _)| s == signer)
    }
}

/// A [`Keyring`] at one moment.
#[derive(Debug, Clone, Copy)]
pub struct KeysAt<'a> {
    ring: &'a Keyring,
    now_ms: u64,
}

impl ContextKeys for KeysAt<'_> {
    fn lookup(&self, signer: &str, key_id: u64) -> KeyLookup<'_> {
        match self.ring.keys.get(&(signer.to_string(), key_id)) {
            None => KeyLookup::Unknown,
            Some(k) if k.valid_until_ms.is_some_and(|t| self.now_ms >= t) => KeyLookup::Expired,
            Some(k) => KeyLookup::Valid(&k.secret),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership_state::{ContextKeyRecord, MemberRecord, Status};

    fn record(id: &str, keys: &[(u64, u64)]) -> MemberRecord {
        let mut r = MemberRecord::new(id, format!("{id}:1"));
        r.context_keys = keys
            .iter()
            .map(|&(id, created_ms)| ContextKeyRecord {
                created_ms,
                id,
                secret: [id as u8; SECRET_LEN],
            })
            .collect();
        r
    }

    #[test]
    fn a_replaced_key_verifies_until_the_grace_period_after_its_successor() {
        let state = MembershipState::of_members(
            "c",
            8,
            [
                record("a", &[(1, 1_000), (2, 5_000)]),
                record("b", &[(3, 2_000)]),
            ],
        );
        let ring = Keyring::of_state(&state, "a", 10_000);
        assert_eq!(ring.signing().map(|k| k.id), Some(2));
        let at = |t| ring.at(t);
        assert!(matches!(at(14_999).lookup("a", 1), KeyLookup::Valid(_)));
        assert_eq!(at(15_000).lookup("a", 1), KeyLookup::Expired);
        assert!(matches!(at(u64::MAX).lookup("a", 2), KeyLookup::Valid(_)));
        assert!(matches!(at(u64::MAX).lookup("b", 3), KeyLookup::Valid(_)));
        // A key id is a signer's: b's key does not verify as a's.
        assert_eq!(at(0).lookup("a", 3), KeyLookup::Unknown);
        assert!(ring.knows_signer("b") && !ring.knows_signer("z"));
    }

    #[test]
    fn a_node_signs_with_its_newest_announced_key() {
        let state = MembershipState::of_members(
            "c",
            8,
            [
                record("a", &[(1, 1_000), (2, 5_000)]),
                record("b", &[(3, 2_000)]),
            ],
        );
        let ring = Keyring::of_state(&state, "a", 10_000);
        // Key 2 made but not yet announced: key 1 signs.
        assert_eq!(ring.signing_as_of(1_000).map(|k| k.id), Some(1));
        assert_eq!(ring.signing_as_of(4_999).map(|k| k.id), Some(1));
        assert_eq!(ring.signing_as_of(5_000).map(|k| k.id), Some(2));
        // Nothing announced (a first start whose announce gave up): the newest.
        assert_eq!(ring.signing_as_of(0).map(|k| k.id), Some(2));
        let b = Keyring::of_state(&state, "b", 10_000);
        assert_eq!(b.signing_as_of(0).map(|k| k.id), Some(3));
        assert_eq!(
            Keyring::of_state(&state, "z", 10_000).signing_as_of(9_999),
            None
        );
    }

    #[test]
    fn keys_of_removed_members_verify_nothing() {
        let mut state =
            MembershipState::of_members("c", 8, [record("a", &[(1, 1)]), record("b", &[(2, 1)])]);
        let mut b = state.member("b").unwrap().clone();
        b.status = Status::Removed;
        state.set_member(b);
        let ring = Keyring::of_state(&state, "a", 10);
        assert_eq!(ring.at(0).lookup("b", 2), KeyLookup::Unknown);
        assert!(matches!(ring.at(0).lookup("a", 1), KeyLookup::Valid(_)));
    }
}

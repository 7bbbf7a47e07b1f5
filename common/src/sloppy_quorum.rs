//! Sloppy quorum (paper 4.6): which nodes a request goes to, as a pure function of the key's
//! preference list and this node's view of which peers answer.
//!
//! "All read and write operations are performed on the first N healthy nodes from the
//! preference list, which may not always be the first N nodes encountered while walking the
//! consistent hashing ring." A write's copy for a primary replica this node sees as down goes to
//! the next healthy node beyond the top N (a fallback) as a hint naming that primary; the
//! fallback delivers it once the primary answers again. A read that cannot reach R primaries
//! also asks the fallbacks, which answer with the hints they hold.
//!
//! No I/O here: a coordinator fans out what these functions decide (a node's coordinator, or a
//! client coordinating its own reads, paper 6.4: both call the same code), and they are tested
//! exhaustively on their own.

use crate::ring::{Member, Ring};

/// A key's replicas: its N primaries (the top of its preference list) and, during a handover,
/// the previous ring's replicas that are not among them; its first N fallbacks (enough to stand
/// in for every primary, and for some copies that fail); and the sets quorums are counted over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSets {
    pub replicas: Vec<Member>,
    pub fallbacks: Vec<Member>,
    pub sets: QuorumSets,
}

/// The replicas of `key` on `ring` with replication factor `n`.
///
/// While partitions are handed over after a topology change (paper 4.9), `previous` is the ring
/// before it with its replication factor: the replicas are then those of the new ring followed
/// by those of the previous ring that are not among them (less members `is_removed` names), so
/// that writes reach old and new replicas and reads consult both, and nothing written before,
/// during or after the change is missed while data moves.
pub fn replica_sets(
    ring: &Ring,
    n: u32,
    previous: Option<(&Ring, u32)>,
    is_removed: impl Fn(&str) -> bool,
    key: &[u8],
) -> ReplicaSets {
    let n = n as usize;
    let list = ring.preference_list(key, n);
    let mut replicas: Vec<Member> = list.nodes.iter().take(n).map(|m| (*m).clone()).collect();
    let mut sets = QuorumSets::default();
    if let Some((previous, pn)) = previous {
        sets.new = replicas.iter().map(|m| m.id.clone()).collect();
        for m in previous.preference_list(key, pn as usize).nodes {
            if is_removed(&m.id) {
                continue;
            }
            sets.old.push(m.id.clone());
            if !replicas.iter().any(|r| r.id == m.id) {
                replicas.push(m.clone());
            }
        }
        if sets.old.is_empty() {
            // Every previous replica was removed: the new ones are all there is.
            sets = QuorumSets::default();
        }
    }
    let fallbacks = list
        .fallbacks
        .iter()
        .filter(|m| !replicas.iter().any(|r| r.id == m.id))
        .take(n)
        .map(|m| (*m).clone())
        .collect();
    ReplicaSets {
        replicas,
        fallbacks,
        sets,
    }
}

/// The replica sets a quorum is counted over. Outside a handover there is one, the key's N
/// replicas, and both lists are empty. During a handover (paper 4.9) the key has the replicas
/// of the previous ring (`old`, less removed members) and those of the new ring (`new`), and
/// both writes and reads need their quorum in each: W acknowledgements among the old replicas
/// and W among the new, R answers among the old and R among the new. Nodes learn that a
/// handover began or ended at different moments, so a write may be counted by the old ring
/// alone (before the commit reached its coordinator), by both, or by the new ring alone (after
/// the handover ended there), and a read by any of the three; quorums in both sets intersect
/// all of them. Answers from a fallback (a hint holder standing in for a down primary) count
/// in both sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumSets {
    pub old: Vec<String>,
    pub new: Vec<String>,
}

impl QuorumSets {
    pub fn handover(&self) -> bool {
        !self.old.is_empty()
    }
}

/// A write's acknowledgements (by the replica each stands for) or a read's answers.
#[derive(Debug, Clone)]
pub struct Acks<'a> {
    sets: &'a QuorumSets,
    pub all: u32,
    old: u32,
    new: u32,
}

impl<'a> Acks<'a> {
    pub fn new(sets: &'a QuorumSets) -> Self {
        Acks {
            sets,
            all: 0,
            old: 0,
            new: 0,
        }
    }

    /// An acknowledgement or answer by (or, as a hint, for) the replica `primary`; a node in
    /// neither set is a fallback, which counts in both.
    pub fn add(&mut self, primary: &str) {
        self.all += 1;
        let old = self.sets.old.iter().any(|o| o == primary);
        let new = self.sets.new.iter().any(|n| n == primary);
        if old || !new {
            self.old += 1;
        }
        if new || !old {
            self.new += 1;
        }
    }

    /// Whether the request has its quorum `w` (W or R).
    pub fn met(&self, w: u32) -> bool {
        if !self.sets.handover() {
            return self.all >= w;
        }
        let need = |set: &[String]| w.min(set.len() as u32);
        self.old >= need(&self.sets.old) && self.new >= need(&self.sets.new)
    }
}

/// Where one copy of a write goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// The node that receives it.
    pub to: Member,
    /// For a fallback: the primary replica the copy is held for.
    pub hint_for: Option<Member>,
}

/// Where a write's copies go besides the coordinator itself (`self_id`, a primary): one per
/// other primary. A primary that is down is replaced by the next fallback that is up, which
/// holds its copy as a hint; when no fallback is left, the primary gets its copy anyway (it
/// may answer after all). Returns the copies and the fallbacks still unused, in ring order,
/// for copies that fail later.
pub fn place_write(
    primaries: &[Member],
    fallbacks: &[Member],
    self_id: &str,
    is_up: impl Fn(&Member) -> bool,
) -> (Vec<Copy>, Vec<Member>) {
    let mut spare: Vec<Member> = fallbacks
        .iter()
        .filter(|m| m.id != self_id && is_up(m))
        .cloned()
        .collect();
    spare.reverse(); // pop() takes them in ring order
    let mut copies = Vec::with_capacity(primaries.len());
    for p in primaries.iter().filter(|m| m.id != self_id) {
        if is_up(p) {
            copies.push(Copy {
                to: p.clone(),
                hint_for: None,
            });
        } else if let Some(f) = spare.pop() {
            copies.push(Copy {
                to: f,
                hint_for: Some(p.clone()),
            });
        } else {
            copies.push(Copy {
                to: p.clone(),
                hint_for: None,
            });
        }
    }
    spare.reverse();
    (copies, spare)
}

/// The copy that replaces `failed` after it did not take the write: the next spare fallback
/// holds a hint for the primary the failed copy was meant for. `None` when no spare is left.
pub fn replace_copy(failed: &Copy, spare: &mut Vec<Member>) -> Option<Copy> {
    if spare.is_empty() {
        return None;
    }
    let primary = failed.hint_for.clone().unwrap_or_else(|| failed.to.clone());
    Some(Copy {
        to: spare.remove(0),
        hint_for: Some(primary),
    })
}

/// Who a get asks: the primaries this node sees as up (itself included); when those are
/// fewer than `r`, also the down primaries (the view may be wrong) and the first fallbacks
/// that are up, enough to make N healthy nodes. Returns (primaries, fallbacks).
pub fn place_read(
    primaries: &[Member],
    fallbacks: &[Member],
    self_id: &str,
    r: usize,
    is_up: impl Fn(&Member) -> bool,
) -> (Vec<Member>, Vec<Member>) {
    let up = |m: &Member| m.id == self_id || is_up(m);
    let healthy: Vec<Member> = primaries.iter().filter(|m| up(m)).cloned().collect();
    if healthy.len() >= r {
        return (healthy, Vec::new());
    }
    let missing = primaries.len() - healthy.len();
    let extra: Vec<Member> = fallbacks
        .iter()
        .filter(|m| up(m))
        .take(missing)
        .cloned()
        .collect();
    (primaries.to_vec(), extra)
}

#[cfg(test)]
mod handover_tests {
    use super::*;

    fn sets() -> QuorumSets {
        QuorumSets {
            old: vec!["a".into(), "b".into(), "c".into()],
            new: vec!["a".into(), "b".into(), "d".into()],
        }
    }

    #[test]
    fn outside_a_handover_any_w_acknowledgements_do() {
        let none = QuorumSets::default();
        let mut acks = Acks::new(&none);
        acks.add("x");
        assert!(!acks.met(2));
        acks.add("y");
        assert!(acks.met(2));
    }

    #[test]
    fn during_a_handover_a_write_needs_w_in_the_old_and_the_new_replicas() {
        let s = sets();
        // The leaving replica and the new one: one in each set is not enough.
        let mut acks = Acks::new(&s);
        acks.add("c");
        acks.add("d");
        assert!(!acks.met(2));
        acks.add("a");
        assert!(acks.met(2), "a counts in both");
        // The two replicas shared by both rings suffice.
        let mut acks = Acks::new(&s);
        acks.add("a");
        acks.add("b");
        assert!(acks.met(2));
    }

    #[test]
    fn a_smaller_old_set_caps_what_it_must_give() {
        // A removed member is left out of `old`: its one survivor must acknowledge.
        let s = QuorumSets {
            old: vec!["a".into()],
            new: vec!["a".into(), "d".into(), "e".into()],
        };
        let mut acks = Acks::new(&s);
        acks.add("d");
        acks.add("e");
        assert!(!acks.met(2));
        acks.add("a");
        assert!(acks.met(2));
    }

    #[test]
    fn during_a_handover_a_read_needs_r_answers_in_each_set() {
        let s = sets();
        // The leaving replica and the new one alone: not enough in either.
        let mut answers = Acks::new(&s);
        answers.add("c");
        answers.add("d");
        assert!(!answers.met(2));
        answers.add("b");
        assert!(answers.met(2));
        // A fallback's answer (hints) counts in both.
        let mut answers = Acks::new(&s);
        answers.add("a");
        answers.add("fallback");
        assert!(answers.met(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member::new(*id, format!("{id}:1")))
            .collect()
    }

    fn ids(ms: &[Member]) -> Vec<&str> {
        ms.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn healthy_primaries_get_their_own_copies() {
        let (p, f) = (nodes(&["a", "b", "c"]), nodes(&["d", "e"]));
        let (copies, spare) = place_write(&p, &f, "a", |_| true);
        assert_eq!(copies.len(), 2);
        assert!(copies.iter().all(|c| c.hint_for.is_none()));
        assert_eq!(ids(&spare), ["d", "e"]);
    }

    #[test]
    fn down_primaries_are_replaced_by_fallbacks_in_ring_order_with_hints() {
        let (p, f) = (nodes(&["a", "b", "c"]), nodes(&["d", "e", "x"]));
        let down = ["b", "c", "d"];
        let (copies, spare) = place_write(&p, &f, "a", |m| !down.contains(&m.id.as_str()));
        let got: Vec<(&str, Option<&str>)> = copies
            .iter()
            .map(|c| (c.to.id.as_str(), c.hint_for.as_ref().map(|m| m.id.as_str())))
            .collect();
        assert_eq!(got, [("e", Some("b")), ("x", Some("c"))]);
        assert!(spare.is_empty());
    }

    #[test]
    fn with_no_fallback_left_a_down_primary_still_gets_its_copy() {
        let (p, f) = (nodes(&["a", "b", "c"]), nodes(&["d"]));
        let (copies, _) = place_write(&p, &f, "a", |m| m.id == "a" || m.id == "d");
        assert_eq!(copies[0].to.id, "d");
        assert_eq!(copies[0].hint_for.as_ref().unwrap().id, "b");
        assert_eq!(copies[1].to.id, "c");
        assert_eq!(copies[1].hint_for, None);
    }

    #[test]
    fn every_placement_has_one_copy_per_other_primary_and_no_node_twice() {
        // Exhaustive over which of 3 primaries and 3 fallbacks are up.
        let (p, f) = (nodes(&["a", "b", "c"]), nodes(&["d", "e", "g"]));
        for mask in 0u32..64 {
            let all: Vec<&Member> = p.iter().chain(&f).collect();
            let up = |m: &Member| {
                let i = all.iter().position(|x| x.id == m.id).unwrap();
                mask & (1 << i) != 0
            };
            let (copies, spare) = place_write(&p, &f, "a", up);
            assert_eq!(copies.len(), 2, "mask {mask:b}");
            let mut to: Vec<&str> = copies.iter().map(|c| c.to.id.as_str()).collect();
            to.extend(spare.iter().map(|m| m.id.as_str()));
            let n = to.len();
            to.sort();
            to.dedup();
            assert_eq!(to.len(), n, "a node used twice, mask {mask:b}");
            for c in &copies {
                match &c.hint_for {
                    Some(owner) => assert!(!up(owner) && up(&c.to) && f.contains(&c.to)),
                    None => assert!(p.contains(&c.to)),
                }
            }
        }
    }

    #[test]
    fn a_failed_copy_moves_to_the_next_spare_for_the_same_primary() {
        let mut spare = nodes(&["d", "e"]);
        let failed = Copy {
            to: Member::new("b", "b:1"),
            hint_for: None,
        };
        let next = replace_copy(&failed, &mut spare).unwrap();
        assert_eq!(
            (next.to.id.as_str(), next.hint_for.unwrap().id.as_str()),
            ("d", "b")
        );
        let failed_hint = Copy {
            to: Member::new("d", "d:1"),
            hint_for: Some(Member::new("c", "c:1")),
        };
        let next = replace_copy(&failed_hint, &mut spare).unwrap();
        assert_eq!(
            (next.to.id.as_str(), next.hint_for.unwrap().id.as_str()),
            ("e", "c")
        );
        assert!(replace_copy(&failed, &mut spare).is_none());
    }

    #[test]
    fn reads_ask_fallbacks_only_when_primaries_cannot_make_r() {
        let (p, f) = (nodes(&["a", "b", "c"]), nodes(&["d", "e", "g"]));
        let (asked, extra) = place_read(&p, &f, "a", 2, |m| m.id != "c");
        assert_eq!(ids(&asked), ["a", "b"]);
        assert!(extra.is_empty());
        let (asked, extra) = place_read(&p, &f, "a", 2, |m| m.id != "b" && m.id != "c");
        assert_eq!(ids(&asked), ["a", "b", "c"]);
        assert_eq!(ids(&extra), ["d", "e"]);
        let (_, extra) = place_read(&p, &f, "a", 2, |m| {
            !["b", "c", "d"].contains(&m.id.as_str())
        });
        assert_eq!(ids(&extra), ["e", "g"]);
    }
}

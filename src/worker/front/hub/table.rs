//! The hub's table of connections by token (see [`Table`]).

/// Generations stay below bit 31, so that a token (generation << 32 |
/// index) never has the hub's listener bit (63).
const GENERATION_MASK: u32 = 0x7fff_ffff;

/// The connections by token, from their first park to their close: a slab
/// whose slots carry a generation, so that a stale token — from an event
/// fetched before a sweep closed its connection and the slot was reused —
/// finds nothing. A slot is `Busy` while a thread serves its connection.
pub(super) struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
}

struct Slot<T> {
    generation: u32,
    entry: Entry<T>,
}

enum Entry<T> {
    Free,
    Busy,
    Parked(T),
}

fn token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | index as u64
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Table<T> {
    /// A new slot with `item` parked in it.
    pub(super) fn insert(&mut self, item: T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot { generation: 0, entry: Entry::Free });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.entry = Entry::Parked(item);
        token(index, slot.generation)
    }

    /// The slot `token` names, if it is still that token's.
    fn slot(&mut self, token: u64) -> Option<&mut Slot<T>> {
        let index = (token & 0xffff_ffff) as usize;
        let generation = (token >> 32) as u32;
        self.slots.get_mut(index).filter(|s| s.generation == generation && !matches!(s.entry, Entry::Free))
    }

    pub(super) fn get_mut(&mut self, token: u64) -> Option<&mut T> {
        match &mut self.slot(token)?.entry {
            Entry::Parked(item) => Some(item),
            _ => None,
        }
    }

    /// Takes a parked item out; its slot stays its own (`Busy`).
    pub(super) fn take(&mut self, token: u64) -> Option<T> {
        let slot = self.slot(token)?;
        match std::mem::replace(&mut slot.entry, Entry::Busy) {
            Entry::Parked(item) => Some(item),
            other => {
                slot.entry = other;
                None
            }
        }
    }

    /// Parks `item` again in its own busy slot.
    pub(super) fn put(&mut self, token: u64, item: T) -> Result<(), T> {
        match self.slot(token) {
            Some(slot) if matches!(slot.entry, Entry::Busy) => {
                slot.entry = Entry::Parked(item);
                Ok(())
            }
            _ => Err(item),
        }
    }

    /// Frees a busy slot (its item was closed).
    pub(super) fn release(&mut self, token: u64) {
        let index = (token & 0xffff_ffff) as usize;
        if self.slot(token).is_some_and(|s| matches!(s.entry, Entry::Busy)) {
            self.vacate(index);
        }
    }

    fn vacate(&mut self, index: usize) -> Option<T> {
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(index as u32);
        match std::mem::replace(&mut slot.entry, Entry::Free) {
            Entry::Parked(item) => Some(item),
            _ => None,
        }
    }

    /// Moves every parked item for which `pred` holds to `out`, freeing
    /// its slot.
    pub(super) fn take_where(&mut self, mut pred: impl FnMut(&mut T) -> bool, out: &mut Vec<T>) {
        for index in 0..self.slots.len() {
            let take = match &mut self.slots[index].entry {
                Entry::Parked(item) => pred(item),
                _ => false,
            };
            if take {
                out.extend(self.vacate(index));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_live_from_park_to_release_and_stale_tokens_find_nothing() {
        let mut t: Table<&str> = Table::default();
        let a = t.insert("a");
        let b = t.insert("b");
        assert_eq!(t.take(a), Some("a"));
        assert_eq!(t.take(a), None, "busy: taken once");
        assert_eq!(t.put(a, "a2"), Ok(()));
        assert_eq!(t.put(a, "a3"), Err("a3"), "parked already");
        assert_eq!(t.take(a), Some("a2"));
        t.release(a);
        assert_eq!((t.take(a), t.put(a, "x")), (None, Err("x")), "released");
        let c = t.insert("c");
        assert_ne!(a, c, "a reused slot has a new generation");
        assert_eq!(t.get_mut(c).copied(), Some("c"));
        let mut out = Vec::new();
        t.take_where(|s| *s == "b", &mut out);
        assert_eq!((out, t.get_mut(b).copied()), (vec!["b"], None));
        t.release(c);
        assert_eq!(t.take(c), Some("c"), "release frees busy slots only");
        assert_eq!(t.take(u64::MAX >> 1), None, "no such slot");
        assert_eq!(a & super::super::LISTENER, 0);
    }
}

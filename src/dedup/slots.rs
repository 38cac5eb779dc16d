//! Which slot of a detector's device memory holds which kept frame's cells: one slot per kept
//! frame of the window, and one for the frame being looked at.

use super::decide::Decision;

pub struct Slots {
    held: Vec<Option<u64>>,
    /// The slot of the frame looked at last, until its decision settles it.
    looking: Option<usize>,
}

impl Slots {
    pub fn new(window: usize) -> Self {
        Self {
            held: vec![None; window.max(1) + 1],
            looking: None,
        }
    }

    pub fn count(&self) -> usize {
        self.held.len()
    }

    /// A free slot for a new frame's cells.
    pub fn look(&mut self) -> usize {
        let slot = self
            .held
            .iter()
            .position(Option::is_none)
            .expect("a window of n kept frames leaves one of its n + 1 slots free");
        self.looking = Some(slot);
        slot
    }

    /// The slot given to the frame looked at last, until its decision settles it.
    pub fn looking(&self) -> Option<usize> {
        self.looking
    }

    /// The kept frames' slots and indices.
    pub fn kept(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.held
            .iter()
            .enumerate()
            .filter_map(|(slot, held)| held.map(|index| (slot, index)))
    }

    /// Keeps the looked-at frame's cells if it was kept, and frees those of released frames.
    pub fn settle(&mut self, index: u64, decision: &Decision) {
        if let Some(slot) = self.looking.take() {
            if decision.keeps(index) {
                self.held[slot] = Some(index);
            }
        }
        for held in &mut self.held {
            if held.is_some_and(|kept| decision.released.contains(&kept)) {
                *held = None;
            }
        }
    }

    /// Forgets every kept frame (the frame size changed: none can match any more).
    pub fn clear(&mut self) {
        self.held.iter_mut().for_each(|h| *h = None);
        self.looking = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_frames_hold_their_slot_until_released() {
        let mut slots = Slots::new(2);
        let decide = |source: u64, released: Vec<u64>| Decision { source, released };
        assert_eq!(slots.look(), 0);
        slots.settle(0, &decide(0, vec![]));
        assert_eq!(slots.look(), 1);
        slots.settle(1, &decide(0, vec![])); // a duplicate: its slot stays free
        assert_eq!(slots.look(), 1);
        slots.settle(2, &decide(2, vec![]));
        assert_eq!(slots.look(), 2);
        slots.settle(3, &decide(3, vec![0]));
        assert_eq!(slots.kept().collect::<Vec<_>>(), [(1, 2), (2, 3)]);
        assert_eq!(slots.look(), 0);
    }
}

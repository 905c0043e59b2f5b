//! Bit planes: one bit per VBN, one plane per snapshot.
//!
//! The block map of a catalog is a matrix with a row per VBN and a column
//! per snapshot plus the active file system; each column is a [`Plane`].
//! Storage images are expressions over planes (sum = OR, difference =
//! AND NOT, intersection = AND), computed word-wise in O(n/64).

/// A dense bitmap over VBNs 0..len. Invariant: no trailing zero words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plane {
    words: Vec<u64>,
}

impl Plane {
    /// An empty plane.
    pub fn new() -> Self {
        Plane::default()
    }
    /// A plane from its 64-bit words (bit `v % 64` of word `v / 64` is VBN v).
    pub fn from_words(words: Vec<u64>) -> Self {
        let mut p = Plane { words };
        p.trim();
        p
    }
    /// The words, for storage.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    fn trim(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
    /// Whether VBN `v` is in the plane.
    pub fn get(&self, v: u64) -> bool {
        let w = (v / 64) as usize;
        w < self.words.len() && self.words[w] & (1 << (v % 64)) != 0
    }
    /// Adds VBN `v`.
    pub fn set(&mut self, v: u64) {
        let w = (v / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (v % 64);
    }
    /// Adds VBNs `v..v+n`, a word at a time.
    pub fn set_run(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        let end = v + n; // one past the last
        let last = ((end - 1) / 64) as usize;
        if last >= self.words.len() {
            self.words.resize(last + 1, 0);
        }
        let mut x = v;
        while x < end {
            let (wi, bit) = ((x / 64) as usize, x % 64);
            let take = (64 - bit).min(end - x);
            self.words[wi] |= if take == 64 {
                !0
            } else {
                ((1u64 << take) - 1) << bit
            };
            x += take;
        }
    }
    /// Removes VBN `v`.
    pub fn clear(&mut self, v: u64) {
        let w = (v / 64) as usize;
        if w < self.words.len() {
            self.words[w] &= !(1 << (v % 64));
            // Keep the invariant that there are no trailing zero words, so
            // equal planes compare equal.
            self.trim();
        }
    }
    /// Number of VBNs in the plane.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }
    /// One past the highest VBN in the plane.
    pub fn high_water(&self) -> u64 {
        match self.words.last() {
            None => 0,
            Some(&w) => (self.words.len() as u64 - 1) * 64 + 64 - w.leading_zeros() as u64,
        }
    }
    /// Sum: `self + other` (OR).
    pub fn or(&self, other: &Plane) -> Plane {
        let (long, short) = if self.words.len() >= other.words.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut words = long.words.clone();
        for (a, b) in words.iter_mut().zip(&short.words) {
            *a |= b;
        }
        Plane::from_words(words)
    }
    /// Difference: `self - other` (AND NOT).
    pub fn and_not(&self, other: &Plane) -> Plane {
        let mut words = self.words.clone();
        for (a, b) in words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
        Plane::from_words(words)
    }
    /// Intersection: `self & other`.
    pub fn and(&self, other: &Plane) -> Plane {
        Plane::from_words(
            self.words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        )
    }
    /// The lowest VBN at or above `from` that is not in the plane (word by
    /// word, so an allocator scanning a full region stays O(n/64)).
    pub fn next_clear(&self, from: u64) -> u64 {
        let mut wi = (from / 64) as usize;
        let mut mask = !0u64 << (from % 64);
        while wi < self.words.len() {
            let free = !self.words[wi] & mask;
            if free != 0 {
                return wi as u64 * 64 + free.trailing_zeros() as u64;
            }
            wi += 1;
            mask = !0;
        }
        from.max(wi as u64 * 64)
    }
    /// The VBNs in the plane as maximal runs `(first, count)`, ascending.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |v: u64, n: u64| match out.last_mut() {
            Some((s, c)) if *s + *c == v => *c += n,
            _ => out.push((v, n)),
        };
        // A stretch of set bits at a time: a plane is mostly long runs.
        for (wi, &w) in self.words.iter().enumerate() {
            let base = wi as u64 * 64;
            let mut pos = 0u32;
            while pos < 64 && w >> pos != 0 {
                pos += (w >> pos).trailing_zeros();
                let ones = (w >> pos).trailing_ones();
                push(base + pos as u64, ones as u64);
                pos += ones;
            }
        }
        out
    }
}

/// Mark-on-allocate and mark-on-deallocate images: the VBNs allocated and
/// freed since the last snapshot, recorded as they happen. When the base of
/// an image is the last snapshot, they are the image (`top - base`) and its
/// deallocation set (`base - top`) without a full-plane subtraction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarkMaps {
    /// VBNs allocated since the last snapshot (mark-on-allocate).
    pub alloc: Plane,
    /// VBNs freed since the last snapshot (mark-on-deallocate).
    pub dealloc: Plane,
}

impl MarkMaps {
    /// Records that `v` was allocated. A VBN freed earlier in the same
    /// interval and now reused is new data: its bit is cleared from older
    /// planes, so it is no longer a deallocation but an allocation.
    pub fn allocate(&mut self, v: u64) {
        self.dealloc.clear(v);
        self.alloc.set(v);
    }
    /// Records that `v` was freed. A VBN allocated in the same interval was
    /// never in the last snapshot: it simply stops being an allocation.
    pub fn free(&mut self, v: u64) {
        if self.alloc.get(v) {
            self.alloc.clear(v);
        } else {
            self.dealloc.set(v);
        }
    }
}

/// Two mark maps that swap roles at each snapshot: `current` accumulates
/// the changes of the snapshot being made, `previous` holds those of the
/// last snapshot taken (kept in the catalog).
#[derive(Clone, Debug, Default)]
pub struct DoubleMarks {
    /// Changes since the last snapshot.
    pub current: MarkMaps,
    /// Changes that made the last snapshot.
    pub previous: MarkMaps,
}

impl DoubleMarks {
    /// Takes a snapshot: the current maps become the previous ones and the
    /// (old) previous maps, emptied, start accumulating.
    pub fn swap(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current = MarkMaps::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Runs set a word at a time read back, bit for bit and as
        /// maximal runs, as VBNs set one by one.
        #[test]
        fn runs_and_set_run_agree_with_single_bits(
            runs in proptest::collection::vec((0u64..600, 0u64..200), 0..12)
        ) {
            let (mut fast, mut slow) = (Plane::new(), Plane::new());
            for &(v, n) in &runs {
                fast.set_run(v, n);
                for x in v..v + n {
                    slow.set(x);
                }
            }
            prop_assert_eq!(&fast, &slow);
            let mut expect: Vec<(u64, u64)> = Vec::new();
            for v in 0..slow.high_water() {
                if slow.get(v) {
                    match expect.last_mut() {
                        Some((s, n)) if *s + *n == v => *n += 1,
                        _ => expect.push((v, 1)),
                    }
                }
            }
            prop_assert_eq!(slow.runs(), expect);
        }

        /// The mark maps always equal the plane arithmetic, whatever the
        /// sequence of frees, lowest-free reallocations and snapshots.
        #[test]
        fn mark_maps_equal_plane_arithmetic(
            rounds in proptest::collection::vec(
                (proptest::collection::vec(any::<u16>(), 0..20), 0u8..30), 1..25)
        ) {
            let mut planes: Vec<Plane> = vec![Plane::new()];
            let mut live = Plane::new();
            let mut marks = DoubleMarks::default();
            for (frees, allocs) in rounds {
                let mut top = live.clone();
                for f in frees {
                    let runs: Vec<u64> = top.runs().iter().flat_map(|&(v, n)| v..v + n).collect();
                    if runs.is_empty() {
                        break;
                    }
                    let v = runs[f as usize % runs.len()];
                    top.clear(v);
                    marks.current.free(v);
                }
                for _ in 0..allocs {
                    let mut v = 1;
                    while top.get(v) {
                        v += 1;
                    }
                    top.set(v);
                    for p in planes.iter_mut() {
                        p.clear(v);
                    }
                    marks.current.allocate(v);
                }
                let base = planes.last().unwrap();
                prop_assert_eq!(&marks.current.alloc, &top.and_not(base));
                prop_assert_eq!(&marks.current.dealloc, &base.and_not(&top));
                planes.push(top.clone());
                live = top;
                marks.swap();
                prop_assert_eq!(marks.current.clone(), MarkMaps::default());
            }
        }
    }

    #[test]
    fn arithmetic() {
        let mut a = Plane::new();
        a.set_run(1, 10);
        let mut b = Plane::new();
        b.set_run(5, 100);
        assert_eq!(a.or(&b).count(), 104);
        assert_eq!(a.and_not(&b).runs(), vec![(1, 4)]);
        assert_eq!(b.and_not(&a).runs(), vec![(11, 94)]);
        assert_eq!(a.and(&b).runs(), vec![(5, 6)]);
        assert_eq!(b.high_water(), 105);
        a.clear(3);
        assert!(!a.get(3) && a.get(4));
    }
}

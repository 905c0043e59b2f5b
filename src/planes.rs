//! Bit planes: one bit per VBN, one plane per snapshot.
//!
//! The block map of a catalog is a matrix with a row per VBN and a column
//! per snapshot plus the active file system; each column is a [`Plane`].
//! Storage images are expressions over planes (sum = OR, difference =
//! AND NOT, intersection = AND), computed word-wise in O(n/64).

/// A dense bitmap over VBNs 0..len.
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
    /// Adds VBNs `v..v+n`.
    pub fn set_run(&mut self, v: u64, n: u64) {
        for x in v..v + n {
            self.set(x);
        }
    }
    /// Removes VBN `v`.
    pub fn clear(&mut self, v: u64) {
        let w = (v / 64) as usize;
        if w < self.words.len() {
            self.words[w] &= !(1 << (v % 64));
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
    /// The VBNs in the plane as maximal runs `(first, count)`, ascending.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (wi, &w) in self.words.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                let b = w.trailing_zeros() as u64;
                let v = wi as u64 * 64 + b;
                match out.last_mut() {
                    Some((s, n)) if *s + *n == v => *n += 1,
                    _ => out.push((v, 1)),
                }
                w &= w - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

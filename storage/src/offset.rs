//! Offset vocabulary shared by the log and its callers.

/// A half-open range of partition offsets, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffsetRange {
    /// First offset in the range.
    pub start: u64,
    /// First offset past the range.
    pub end: u64,
}

impl OffsetRange {
    /// `[start, end)`; empty when `end <= start`.
    pub fn new(start: u64, end: u64) -> Self {
        OffsetRange { start, end }
    }

    /// Offsets in the range.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no offset.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `offset` is in the range.
    pub fn contains(&self, offset: u64) -> bool {
        self.start <= offset && offset < self.end
    }
}

//! Array storage that is either owned (built or updated in memory) or a view into a memory-mapped shard file.
//! Updating a mapped array copies it into memory first (copy on write), so a loaded shard can take additions.

use std::marker::PhantomData;
use std::sync::Arc;

use memmap2::Mmap;

/// A `[T]` that lives in a `Vec` or in a mapped file.
#[derive(Debug, Clone)]
pub(crate) enum Storage<T> {
    Owned(Vec<T>),
    Mapped { map: Arc<Mmap>, start: usize, len: usize, _t: PhantomData<T> },
}

impl<T> Default for Storage<T> {
    fn default() -> Self {
        Self::Owned(Vec::new())
    }
}

impl<T: bytemuck::Pod> Storage<T> {
    /// A view of `len` elements at byte `start` of `map`; `None` when out of bounds or misaligned.
    pub(crate) fn mapped(map: &Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(size_of::<T>())?;
        let slice = map.get(start..start.checked_add(bytes)?)?;
        bytemuck::try_cast_slice::<u8, T>(slice).ok()?;
        Some(Self::Mapped { map: Arc::clone(map), start, len, _t: PhantomData })
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            // Bounds and alignment were checked in `mapped`.
            Self::Mapped { map, start, len, .. } => bytemuck::cast_slice(&map[*start..*start + len * size_of::<T>()]),
        }
    }

    pub(crate) fn make_mut(&mut self) -> &mut Vec<T> {
        if let Self::Mapped { .. } = self {
            *self = Self::Owned(self.as_slice().to_vec());
        }
        match self {
            Self::Owned(v) => v,
            Self::Mapped { .. } => unreachable!("converted to owned above"),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Owned(v) => v.len(),
            Self::Mapped { len, .. } => *len,
        }
    }
}

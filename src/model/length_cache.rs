//! What a model derives from the sequence length alone (ModernBERT's rotations, MPNet's buckets), kept
//! between calls: computed and uploaded only when a longer text comes, not on every call.

use std::sync::Mutex;

use burn::tensor::Device;

/// The value for the most positions asked for so far, rounded up to a power of two, on one device. A
/// shorter sequence's is cut from it by the caller (its first rows).
#[derive(Debug)]
pub struct LengthCache<T>(Mutex<Option<(Device, usize, T)>>);

impl<T> Default for LengthCache<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

/// A copy of the model starts with none (it may go to another device).
impl<T> Clone for LengthCache<T> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<T: Clone> LengthCache<T> {
    /// The value for at least `seq` positions on `device`: the cached one where it reaches that far, else
    /// `fill(positions)` for `seq` rounded up to a power of two, kept in its place.
    pub fn at_least(&self, seq: usize, device: &Device, fill: impl FnOnce(usize) -> T) -> T {
        // A panic elsewhere while holding the lock leaves the cache as valid as before.
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*cache {
            Some((on, positions, value)) if on == device && *positions >= seq => value.clone(),
            _ => {
                let positions = seq.next_power_of_two();
                let value = fill(positions);
                *cache = Some((device.clone(), positions, value.clone()));
                value
            }
        }
    }
}

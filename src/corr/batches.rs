//! How an MLP job's patches are cut into batches: the dealer makes one set of correlations
//! per batch, the servers consume them batch after batch.

use crate::model::geometry::Geometry;

/// Batches of a job: (batch index, first patch, patches in batch).
pub fn batches(num_patches: usize, batch: usize) -> impl Iterator<Item = (u32, usize, usize)> {
    (0..num_patches.div_ceil(batch)).map(move |b| {
        let start = b * batch;
        (b as u32, start, batch.min(num_patches - start))
    })
}

/// Gathers the input windows of patches `start..start+n` from a padded image-sized vector
/// into an (inputs x n) row-major matrix.
pub fn extract_batch(geo: &Geometry, padded: &[u64], start: usize, n: usize) -> Vec<u64> {
    let nin = geo.patch.input * geo.patch.input;
    let mut x = vec![0u64; nin * n];
    let mut window = vec![0u64; nin];
    for j in 0..n {
        geo.extract(padded, start + j, &mut window);
        for (r, &v) in window.iter().enumerate() {
            x[r * n + j] = v;
        }
    }
    x
}

//! `x·W + b` (+ GELU) with int8 weights, for the q8 models on the browser's CPU path.
//!
//! Why: widened to f32 at load, a q8 model computes (and occupies memory) like an f32 one. Here the
//! weights stay int8 and the products are integer: WebAssembly's `i32x4.dot_i16x8_s` does eight
//! multiply-adds in one instruction, where f32 lanes do four in two (SIMD128 has no fused multiply-add).
//! The activations are quantised per row to 16 bits, not 8, so they add next to no error to the
//! weights' own: a row's i16 values times an int8 block of [`BLOCK`] stay far below `i32::MAX`
//! (32 × 32767 × 128 < 2³¹), and each block's integer sum is scaled into f32 before the next begins.

use super::lanes::{F32x4, I16x8, I32x4};
use super::{Epilogue, Matrix, gelu};

/// Weights of a column sharing one scale, consecutive along the depth (the sums' axis).
pub const BLOCK: usize = 32;
/// Output rows per micro-kernel call: 4 rows × 8 columns is 8 i32 accumulators, with two weight
/// vectors and a broadcast within V8's 15 vector registers (as in [`super::gemm`]). 5 and 6 rows ran slower
/// (q8 forward in Node, 8×128: 527 → 640 and 626 ms; 1×128: 65 → 77 ms).
const MR: usize = 4;
/// Output columns per micro-kernel call: two vectors of four.
const NR: usize = 8;
/// Depth per pass, so that a packed panel (`KC × NR` i16, 4 KiB) stays in L1 while the rows stream by.
const KC: usize = 256;
/// Rows per block, so that a block's quantised activations (`MC × k` i16, at most 384 KiB) stay in L2
/// while every weight panel passes by; the panels are packed again for each block. 8×128 forward: one
/// block 571–572 ms, 64 rows 532–536, 128 523–533, 256 541–544.
const MC: usize = 128;

/// Int8 weights `[k, n]`, row-major and contiguous: `w[p, j] = values[p·n + j] · scales[(p / BLOCK)·n + j]`
/// (burn's block quantisation with blocks of `[BLOCK, 1]`); or, for [`gemm_q8_transposed`], stored
/// `[n, k]` with blocks of `[1, BLOCK]`.
#[derive(Clone, Copy)]
pub struct Q8Matrix<'a> {
    pub values: &'a [i8],
    pub scales: &'a [f32],
}

/// `c[m, n] = epilogue(a[m, k] · b[k, n])`, `k` a multiple of [`BLOCK`].
///
/// Panics if a slice is too short for its shape or `k` is not whole blocks (callers pass tensors whose
/// shapes they checked).
pub fn gemm_q8(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Q8Matrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_lengths((m, n, k), a, b, c, ldc, epilogue);
    let (xq, row_scales) = quantize_rows(a, m, k);
    let full_cols = n / NR * NR;
    let mut panel = vec![I16x8::zero(); KC.min(k)];
    for rows in (0..m).step_by(MC).map(|start| start..(start + MC).min(m)) {
        for col in (0..full_cols).step_by(NR) {
            for pass in (0..k).step_by(KC) {
                let depth = pass..(pass + KC).min(k);
                pack_panel(b, n, depth.clone(), col, &mut panel);
                let job = Job {
                    xq: &xq,
                    k,
                    panel: &panel,
                    depth: (depth.start, depth.end),
                    scales: b.scales,
                    n,
                    col,
                };
                let mut row = rows.start;
                // SAFETY: rows `row..row + MR` < m, columns `col..col + NR` ≤ n, depth within `k`, and
                // every slice's length was asserted above.
                unsafe {
                    while row + MR <= rows.end {
                        block4(row, job, c, ldc);
                        row += MR;
                    }
                    match rows.end - row {
                        3 => block3(row, job, c, ldc),
                        2 => block2(row, job, c, ldc),
                        1 => block1(row, job, c, ldc),
                        _ => {}
                    }
                }
            }
        }
    }
    for j in full_cols..n {
        for i in 0..m {
            c[i * ldc + j] = (0..k / BLOCK)
                .map(|block| {
                    let dot: i32 = (block * BLOCK..(block + 1) * BLOCK)
                        .map(|p| xq[i * k + p] as i32 * b.values[p * n + j] as i32)
                        .sum();
                    dot as f32 * b.scales[block * n + j]
                })
                .sum();
        }
    }
    if k == 0 {
        (0..m).for_each(|i| c[i * ldc..i * ldc + n].fill(0.0));
    }
    finish(&row_scales, n, c, ldc, epilogue);
}

/// `c[m, n] = epilogue(a[m, k] · w)` from int8 weights stored `[n, k]` (PyTorch's `[out, in]`: the
/// tied decoder reading a q8 word table), in blocks of [`BLOCK`] along each row:
/// `w[p, j] = values[j·k + p] · scales[j·(k / BLOCK) + p / BLOCK]`. Each output is a dot product of two
/// contiguous runs, so nothing is packed; a weight row is read once per [`MR`] rows, few as the decoder
/// runs on the masked tokens only.
///
/// Panics if a slice is too short for its shape or `k` is not whole blocks.
pub fn gemm_q8_transposed(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Q8Matrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_lengths((m, n, k), a, b, c, ldc, epilogue);
    let blocks = k / BLOCK;
    let (xq, row_scales) = quantize_rows(a, m, k);
    for first in (0..m).step_by(MR) {
        let rows = (m - first).min(MR);
        for j in 0..n {
            let mut acc = [F32x4::splat(0.0); MR];
            for block in 0..blocks {
                let start = block * BLOCK;
                // SAFETY: depths `start..start + BLOCK` ≤ k of weight row `j` < n and of activation rows
                // `first + r` < m, within the lengths asserted above.
                unsafe {
                    let w = b.values.as_ptr().add(j * k + start);
                    let (w0, w1, w2, w3) = (
                        I16x8::load_widened(w),
                        I16x8::load_widened(w.add(8)),
                        I16x8::load_widened(w.add(16)),
                        I16x8::load_widened(w.add(24)),
                    );
                    let scale = F32x4::splat(b.scales[j * blocks + block]);
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let x = xq.as_ptr().add((first + r) * k + start);
                        let sum = I32x4::zero()
                            .dot_add(I16x8::load(x), w0)
                            .dot_add(I16x8::load(x.add(8)), w1)
                            .dot_add(I16x8::load(x.add(16)), w2)
                            .dot_add(I16x8::load(x.add(24)), w3);
                        *acc = sum.to_f32().mul_add(scale, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                c[(first + r) * ldc + j] = acc.to_array().iter().sum();
            }
        }
    }
    finish(&row_scales, n, c, ldc, epilogue);
}

/// Panics unless `k` is whole blocks and every slice is long enough for its shape (either layout holds
/// `k · n` weights).
fn check_lengths(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Q8Matrix,
    c: &[f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    assert!(k.is_multiple_of(BLOCK), "q8: depth {k} is not whole blocks");
    assert!(
        k == 0 || a.data.len() >= (m - 1) * a.row_stride + k,
        "q8: lhs too short"
    );
    assert!(b.values.len() >= k * n, "q8: weights too short");
    assert!(b.scales.len() >= k / BLOCK * n, "q8: scales too short");
    assert!(c.len() >= (m - 1) * ldc + n, "q8: output too short");
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= n, "q8: bias too short");
    }
}

/// Rows `ids` of an int8 matrix `[n, width]` stored as [`gemm_q8_transposed`] reads it, widened to
/// f32 (the embeddings' lookup in a q8 word table).
///
/// Panics if an id is past the matrix's end.
pub fn rows(values: &[i8], scales: &[f32], width: usize, ids: &[usize]) -> Vec<f32> {
    let blocks = width.div_ceil(BLOCK);
    ids.iter()
        .flat_map(|&id| {
            let row = &values[id * width..(id + 1) * width];
            let scales = &scales[id * blocks..(id + 1) * blocks];
            row.chunks(BLOCK)
                .zip(scales)
                .flat_map(|(block, &scale)| block.iter().map(move |&q| q as f32 * scale))
        })
        .collect()
}

/// Each row of `a` as i16 times one scale (its largest magnitude over 32767), rows `k` apart. In lanes:
/// scalar `round` is a libm call in WebAssembly, and this runs over every Linear's input.
fn quantize_rows(a: Matrix, m: usize, k: usize) -> (Vec<i16>, Vec<f32>) {
    let mut values = vec![0i16; m * k];
    let mut scales = Vec::with_capacity(m);
    let lanes = k / 4 * 4;
    for i in 0..m {
        let out = &mut values[i * k..(i + 1) * k];
        let row = &a.data[i * a.row_stride..i * a.row_stride + k];
        let mut top = F32x4::splat(0.0);
        for j in (0..lanes).step_by(4) {
            // SAFETY: `j + 4 ≤ k`, the row's length.
            let x = unsafe { F32x4::load(row.as_ptr().add(j)) };
            top = top.max(x).max(F32x4::splat(0.0) - x);
        }
        let largest = row[lanes..]
            .iter()
            .fold(top.to_array().into_iter().fold(0f32, f32::max), |t, x| {
                t.max(x.abs())
            });
        let scale = if largest > 0.0 {
            largest / 32767.0
        } else {
            1.0
        };
        let inverse = F32x4::splat(1.0 / scale);
        for j in (0..lanes).step_by(4) {
            // SAFETY: `j + 4 ≤ k`, the length of both rows.
            unsafe {
                (F32x4::load(row.as_ptr().add(j)) * inverse).store_i16(out.as_mut_ptr().add(j))
            }
        }
        for j in lanes..k {
            out[j] = (row[j] / scale).round_ties_even() as i16;
        }
        scales.push(scale);
    }
    (values, scales)
}

/// Columns `col..col + NR` of weight rows `depth`, paired by row and widened: for each pair of rows,
/// columns 0–3 then 4–7 (the order [`I32x4::dot_add`] consumes them).
fn pack_panel(
    b: Q8Matrix,
    n: usize,
    depth: core::ops::Range<usize>,
    col: usize,
    panel: &mut [I16x8],
) {
    assert!(
        depth.len().is_multiple_of(2)
            && panel.len() >= depth.len()
            && depth.end * n <= b.values.len()
    );
    for (pair, p) in depth.step_by(2).enumerate() {
        // SAFETY: rows `p` and `p + 1` < `depth.end` and columns `col..col + NR` ≤ n are in bounds
        // (asserted above, with `col + NR ≤ n` by the caller).
        let (low, high) = unsafe {
            let row = b.values.as_ptr().add(p * n + col);
            I16x8::load_row_pairs(row, row.add(n))
        };
        panel[2 * pair] = low;
        panel[2 * pair + 1] = high;
    }
}

/// What every micro-kernel call of one panel and depth pass shares.
#[derive(Clone, Copy)]
struct Job<'a> {
    /// The quantised activations, rows `k` apart.
    xq: &'a [i16],
    k: usize,
    panel: &'a [I16x8],
    /// The pass's depth rows, `[start, end)`.
    depth: (usize, usize),
    scales: &'a [f32],
    n: usize,
    col: usize,
}

/// `$rows` rows × `NR` columns at (`row`, `job.col`) over `job.depth`: each block's integer sums scaled by
/// its weight scales and added to `c` (stored, on the first block), so that [`finish`] only scales rows.
/// A macro, not a loop over rows: at opt-level z LLVM unrolls nothing, and only constant indices let the
/// accumulators live in registers.
///
/// # Safety
/// Rows `row..row + $rows` of `job.xq` and `c`, and columns `job.col..job.col + NR` of `c` and the scales,
/// must be in bounds.
macro_rules! block {
    ($name:ident, $rows:literal, $($r:literal)+) => {
        #[inline(always)]
        unsafe fn $name(row: usize, job: Job, c: &mut [f32], ldc: usize) {
            unsafe {
                let c_ptr = c.as_mut_ptr().add(row * ldc + job.col);
                let x_ptr = job.xq.as_ptr().add(row * job.k);
                let x_rows = [$( x_ptr.add($r * job.k) ),+];
                let mut w = job.panel.as_ptr();
                for start in (job.depth.0..job.depth.1).step_by(BLOCK) {
                    let mut acc = [[I32x4::zero(); 2]; $rows];
                    // A constant trip count, which LLVM unrolls.
                    for pair in 0..BLOCK / 2 {
                        let (w0, w1) = (*w.add(2 * pair), *w.add(2 * pair + 1));
                        $(
                            let x = I16x8::load_pair_splat(x_rows[$r].add(start + 2 * pair));
                            acc[$r][0] = acc[$r][0].dot_add(x, w0);
                            acc[$r][1] = acc[$r][1].dot_add(x, w1);
                        )+
                    }
                    w = w.add(BLOCK);
                    let s = job.scales.as_ptr().add(start / BLOCK * job.n + job.col);
                    let (s0, s1) = (F32x4::load(s), F32x4::load(s.add(4)));
                    $(
                        let p = c_ptr.add($r * ldc);
                        let (y0, y1) = (acc[$r][0].to_f32() * s0, acc[$r][1].to_f32() * s1);
                        if start == 0 {
                            y0.store(p);
                            y1.store(p.add(4));
                        } else {
                            (F32x4::load(p) + y0).store(p);
                            (F32x4::load(p.add(4)) + y1).store(p.add(4));
                        }
                    )+
                }
            }
        }
    };
}
block!(block4, 4, 0 1 2 3);
block!(block3, 3, 0 1 2);
block!(block2, 2, 0 1);
block!(block1, 1, 0);

/// `c[i, j] · row_scales[i] + bias[j]`, then GELU if asked.
fn finish(row_scales: &[f32], n: usize, c: &mut [f32], ldc: usize, epilogue: Epilogue) {
    let bias = |j: usize| epilogue.bias.map_or(0.0, |b| b[j]);
    let vector_cols = n / 4 * 4;
    for (i, &scale) in row_scales.iter().enumerate() {
        let row = &mut c[i * ldc..i * ldc + n];
        let s = F32x4::splat(scale);
        for j in (0..vector_cols).step_by(4) {
            // SAFETY: columns `j..j + 4` ≤ n lie in `row` and in the bias (asserted `≥ n` long).
            unsafe {
                let p = row.as_mut_ptr().add(j);
                let b = match epilogue.bias {
                    Some(b) => F32x4::load(b.as_ptr().add(j)),
                    None => F32x4::splat(0.0),
                };
                let y = F32x4::load(p).mul_add(s, b);
                (if epilogue.gelu { gelu(y) } else { y }).store(p);
            }
        }
        for (j, y) in row.iter_mut().enumerate().skip(vector_cols) {
            let v = F32x4::splat(*y * scale + bias(j));
            *y = if epilogue.gelu { gelu(v) } else { v }.to_array()[0];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Against f64 products of the same int8 weights and the unquantised activations, within the bound
    /// the 16-bit activations allow: each product off by at most half a step of its row's scale. Both
    /// layouts: `[k, n]` ([`gemm_q8`]) and `[n, k]` ([`gemm_q8_transposed`]).
    #[test]
    fn gemm_q8_matches_f64_within_the_activations_rounding() {
        for (&(m, n, k), transposed) in [
            (1, 8, 32),
            (3, 13, 64),
            (6, 16, 288),
            (9, 21, 544),
            (MC + 5, 16, 288),
            (5, 8, 0),
        ]
        .iter()
        .flat_map(|shape| [(shape, false), (shape, true)])
        {
            let lda = k + 3;
            let a = values(m * lda, 1);
            let weights: Vec<i8> = values(k * n, 2).iter().map(|v| (v * 127.0) as i8).collect();
            let scales: Vec<f32> = values(k / BLOCK * n, 3)
                .iter()
                .map(|v| 0.01 + v.abs() * 0.05)
                .collect();
            let bias = values(n, 4);
            let w = |p: usize, j: usize| match transposed {
                false => weights[p * n + j] as f64 * scales[p / BLOCK * n + j] as f64,
                true => weights[j * k + p] as f64 * scales[j * (k / BLOCK) + p / BLOCK] as f64,
            };
            let gemm = match transposed {
                false => gemm_q8,
                true => gemm_q8_transposed,
            };
            for gelu_on in [false, true] {
                let ldc = n + 2;
                let mut c = vec![f32::NAN; m * ldc];
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    gelu: gelu_on,
                };
                let b = Q8Matrix {
                    values: &weights,
                    scales: &scales,
                };
                let a_m = Matrix {
                    data: &a,
                    row_stride: lda,
                };
                gemm((m, n, k), a_m, b, &mut c, ldc, epilogue);
                for i in 0..m {
                    let row = &a[i * lda..i * lda + k];
                    let step = row.iter().fold(0f64, |t, x| t.max(x.abs() as f64)) / 32767.0;
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|p| row[p] as f64 * w(p, j)).sum();
                        let bound: f64 = (0..k).map(|p| w(p, j).abs()).sum::<f64>() * step / 2.0;
                        let linear = dot + bias[j] as f64;
                        let want = if gelu_on {
                            0.5 * linear * (1.0 + libm::erf(linear / 2f64.sqrt()))
                        } else {
                            linear
                        };
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() <= bound + 1e-5,
                            "({m},{n},{k}) transposed={transposed} gelu={gelu_on} [{i},{j}]: {got} vs {want} (bound {bound:.1e})"
                        );
                    }
                    assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|x| x.is_nan()));
                }
            }
        }
    }
}

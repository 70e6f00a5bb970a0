//! The CPU path's two hot loops, written for one thread of WebAssembly SIMD128 (the browser's CPU
//! fallback): `x·W + b` (+ GELU) and softmax attention over all heads.
//!
//! Why our own: a V8 profile of the CPU path (MiniLM, 1×128) put 70% of its time in the `gemm` crate
//! (micro-kernel plus re-packing the activations on every call) and 18% in scalar libm `erf`/`exp` for
//! GELU and burn's naive attention. Here the activations are read in place, each 8-column weight panel
//! is copied into a contiguous buffer that stays in L1 while every row block streams past it, bias and
//! GELU are applied in registers before the single store, and `erf`/`exp` are four-lane polynomials.
//! The lanes are [`F32x4`]: SIMD128 in wasm, plain arrays elsewhere (so the same loops are tested
//! natively). The shipped .wasm is built at opt-level z, which inlines only what is forced and unrolls
//! nothing: hence `#[inline(always)]` throughout and the macros that write the row loops out.

mod lanes;
pub mod q8;

pub use lanes::F32x4;

use super::attention::Scores;

/// Output rows per micro-kernel call (`block4`): 4 rows × 8 columns is 8 accumulators, which with the
/// two weight vectors and a broadcast fit the 15 vector registers V8 allocates on x86-64. Measured on the
/// CPU path (MiniLM 1×128 forward): 4 rows 120 ms, 6 rows 165 ms (spills); unrolling the depth loop ×4
/// made LLVM hoist all its loads, 185 ms.
const MR: usize = 4;
/// Output columns per micro-kernel call: two vectors.
const NR: usize = 8;
/// Depth per pass, so a packed weight panel (`KC × NR` floats, 8 KiB) stays in L1. 1×512 forward: 128
/// 475–530 ms, 256 430–458, 512 441–476.
const KC: usize = 256;
/// Below this many rows, copying a weight panel costs more than its strided reads save. Packing took
/// the 1×512 forward from 535–585 ms to 430–458 (the unpacked panel's rows, a row stride apart, fall
/// into a few L1 sets and evict each other).
const PACK_MIN_ROWS: usize = 16;
/// Rows per block, so that a block's slice of the activations (`MC × KC` floats, 128 KiB) stays in L2
/// while every weight panel passes by; the panels are packed again for each block. 8×128 forward: one
/// block 864–885 ms, 64 rows 785–793, 128 784–786, 256 814–825.
const MC: usize = 128;

/// What happens to `a·b` before it is stored.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to every row.
    pub bias: Option<&'a [f32]>,
    /// Hugging Face's `gelu` (exact erf form) after the bias.
    pub gelu: bool,
}

/// A row-major matrix view: element `(i, j)` at `data[i * row_stride + j]`.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
}

/// `c[m, n] = epilogue(a[m, k] · b[k, n])`, every operand row-major with its own row stride.
///
/// Panics if a slice is too short for its shape (callers pass tensors whose shapes they checked).
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Matrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    let needs = |rows: usize, stride: usize, cols: usize| (rows - 1) * stride + cols;
    assert!(
        k == 0 || a.data.len() >= needs(m, a.row_stride, k),
        "gemm: lhs too short"
    );
    assert!(
        k == 0 || b.data.len() >= needs(k, b.row_stride, n),
        "gemm: rhs too short"
    );
    assert!(c.len() >= needs(m, ldc, n), "gemm: output too short");
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= n, "gemm: bias too short");
    }

    let full_cols = n / NR * NR;
    let passes = k.div_ceil(KC).max(1);
    let mut packed = Vec::new();
    if m >= PACK_MIN_ROWS {
        packed.resize(KC.min(k) * NR, 0.0);
    }
    for pass in 0..passes {
        let depth = pass * KC..((pass + 1) * KC).min(k);
        let stage = Stage {
            first: pass == 0,
            last: pass + 1 == passes,
            epilogue,
        };
        for rows in (0..m).step_by(MC).map(|start| start..(start + MC).min(m)) {
            for col in (0..full_cols).step_by(NR) {
                let panel = if packed.is_empty() {
                    Matrix {
                        data: &b.data[depth.start * b.row_stride + col..],
                        row_stride: b.row_stride,
                    }
                } else {
                    pack_panel(b, depth.clone(), col, &mut packed)
                };
                let mut row = rows.start;
                while row + MR <= rows.end {
                    // SAFETY: rows row..row+MR, columns col..col+NR and depth are in bounds (asserted above).
                    unsafe { block4(row, col, depth.len(), a, depth.start, panel, c, ldc, stage) };
                    row += MR;
                }
                // SAFETY: as above, for the remaining rows.end - row < MR rows.
                unsafe {
                    match rows.end - row {
                        1 => block1(row, col, depth.len(), a, depth.start, panel, c, ldc, stage),
                        2 => block2(row, col, depth.len(), a, depth.start, panel, c, ldc, stage),
                        3 => block3(row, col, depth.len(), a, depth.start, panel, c, ldc, stage),
                        _ => {}
                    }
                }
            }
        }
    }
    // The last n % NR columns (the 30522-token vocabulary leaves 2): plain dot products.
    for i in 0..m {
        for j in full_cols..n {
            let mut sum = epilogue.bias.map_or(0.0, |bias| bias[j]);
            for p in 0..k {
                sum += a.data[i * a.row_stride + p] * b.data[p * b.row_stride + j];
            }
            c[i * ldc + j] = if epilogue.gelu {
                gelu(F32x4::splat(sum)).to_array()[0]
            } else {
                sum
            };
        }
    }
}

/// `c[m, n] = epilogue(a[m, k] · bᵀ)` with `b` `[n, k]` row-major (PyTorch's `[out, in]`: the tied decoder
/// reading the word table through a transposed view). Each output is a dot product of two contiguous runs,
/// so nothing is packed, where burn's matmul copied the whole table on every call; a row of `b` is read once
/// per [`MR`] rows of `a`, few as the decoder runs on the masked tokens only.
///
/// Panics if a slice is too short for its shape.
pub fn gemm_transposed(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Matrix,
    c: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
) {
    if m == 0 || n == 0 {
        return;
    }
    let needs = |rows: usize, stride: usize, cols: usize| (rows - 1) * stride + cols;
    assert!(
        a.data.len() >= needs(m, a.row_stride, k),
        "gemm_transposed: lhs too short"
    );
    assert!(
        b.data.len() >= needs(n, b.row_stride, k),
        "gemm_transposed: rhs too short"
    );
    assert!(
        c.len() >= needs(m, ldc, n),
        "gemm_transposed: output too short"
    );
    if let Some(bias) = epilogue.bias {
        assert!(bias.len() >= n, "gemm_transposed: bias too short");
    }
    let lanes = k / 4 * 4;
    for first in (0..m).step_by(MR) {
        let rows = (m - first).min(MR);
        for j in 0..n {
            let w = &b.data[j * b.row_stride..j * b.row_stride + k];
            let mut acc = [F32x4::splat(0.0); MR];
            for p in (0..lanes).step_by(4) {
                // SAFETY: depths `p..p + 4` ≤ k of row `j` < n of `b` and of rows `first + r` < m of `a`,
                // within the lengths asserted above.
                unsafe {
                    let w = F32x4::load(w.as_ptr().add(p));
                    for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                        let x = F32x4::load(a.data.as_ptr().add((first + r) * a.row_stride + p));
                        *acc = x.mul_add(w, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let x = &a.data[(first + r) * a.row_stride..];
                let tail: f32 = (lanes..k).map(|p| x[p] * w[p]).sum();
                let sum = acc.to_array().iter().sum::<f32>()
                    + tail
                    + epilogue.bias.map_or(0.0, |bias| bias[j]);
                c[(first + r) * ldc + j] = if epilogue.gelu {
                    gelu(F32x4::splat(sum)).to_array()[0]
                } else {
                    sum
                };
            }
        }
    }
}

/// Rows `depth`, columns `col..col + NR` of `b`, copied into `packed` one row after the other.
fn pack_panel<'a>(
    b: Matrix,
    depth: core::ops::Range<usize>,
    col: usize,
    packed: &'a mut [f32],
) -> Matrix<'a> {
    let src = &b.data[depth.start * b.row_stride + col..];
    assert!(src.len() >= (depth.len() - 1) * b.row_stride + NR && packed.len() >= depth.len() * NR);
    for p in 0..depth.len() {
        // SAFETY: in bounds of `src` and `packed` (asserted above).
        unsafe {
            let (from, to) = (
                src.as_ptr().add(p * b.row_stride),
                packed.as_mut_ptr().add(p * NR),
            );
            F32x4::load(from).store(to);
            F32x4::load(from.add(4)).store(to.add(4));
        }
    }
    Matrix {
        data: packed,
        row_stride: NR,
    }
}

/// Where a depth pass stands: the bias goes in on the first, GELU on the last.
#[derive(Clone, Copy)]
struct Stage<'a> {
    first: bool,
    last: bool,
    epilogue: Epilogue<'a>,
}

/// One depth step `p` of a block: every listed row's `a` value times the two weight vectors at `b`.
macro_rules! step {
    ($acc:ident, $a_rows:ident, $b:expr, $p:expr, $($r:literal)+) => {
        let b = $b;
        let (b0, b1) = (F32x4::load(b), F32x4::load(b.add(4)));
        $(
            let x = F32x4::splat(*$a_rows[$r].add($p));
            $acc[$r][0] = x.mul_add(b0, $acc[$r][0]);
            $acc[$r][1] = x.mul_add(b1, $acc[$r][1]);
        )+
    };
}

/// `$rows` rows × `NR` columns of `c` at (`row`, `col`): `depth` steps of `a` from column `a_col`
/// against the `panel` of `b` (its rows from `a_col`, columns `col..col + NR`), accumulating onto earlier
/// passes. A macro, not a loop over rows: at opt-level z LLVM unrolls nothing, and only constant indices
/// let the accumulators live in registers.
///
/// # Safety
/// Rows `row..row + $rows` of `a` and `c`, `depth` rows of `panel` and columns `col..col + NR` of `c`
/// must be in bounds.
macro_rules! block {
    ($name:ident, $rows:literal, $($r:literal)+) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            row: usize,
            col: usize,
            depth: usize,
            a: Matrix,
            a_col: usize,
            panel: Matrix,
            c: &mut [f32],
            ldc: usize,
            stage: Stage,
        ) {
            unsafe {
                let c_ptr = c.as_mut_ptr().add(row * ldc + col);
                let mut acc = [[F32x4::splat(0.0); 2]; $rows];
                if !stage.first {
                    $( let p = c_ptr.add($r * ldc); acc[$r] = [F32x4::load(p), F32x4::load(p.add(4))]; )+
                } else if let Some(bias) = stage.epilogue.bias {
                    let p = bias.as_ptr().add(col);
                    acc = [[F32x4::load(p), F32x4::load(p.add(4))]; $rows];
                }

                let a_ptr = a.data.as_ptr().add(row * a.row_stride + a_col);
                let a_rows = [$( a_ptr.add($r * a.row_stride) ),+];
                let (mut b_ptr, ldb) = (panel.data.as_ptr(), panel.row_stride);
                for p in 0..depth {
                    step!(acc, a_rows, b_ptr, p, $($r)+);
                    b_ptr = b_ptr.add(ldb);
                }

                let gelu_now = stage.last && stage.epilogue.gelu;
                $(
                    let p = c_ptr.add($r * ldc);
                    let [y0, y1] = if gelu_now { [gelu(acc[$r][0]), gelu(acc[$r][1])] } else { acc[$r] };
                    y0.store(p);
                    y1.store(p.add(4));
                )+
            }
        }
    };
}
block!(block4, 4, 0 1 2 3);
block!(block3, 3, 0 1 2);
block!(block2, 2, 0 1);
block!(block1, 1, 0);

/// Horner's rule with the coefficients written out (no loop to leave un-unrolled at opt-level z).
macro_rules! horner {
    ($x:expr; $first:expr $(, $c:expr)*) => {{
        let mut p = F32x4::splat($first);
        $( p = p.mul_add($x, F32x4::splat($c)); )*
        p
    }};
}

/// Hugging Face's `gelu`: `x·Φ(x) = x/2·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: F32x4) -> F32x4 {
    let half_x = x * F32x4::splat(0.5);
    half_x.mul_add(
        erf(x * F32x4::splat(core::f32::consts::FRAC_1_SQRT_2)),
        half_x,
    )
}

/// `erf` within 5e-7: Eigen's rational approximation (odd degree-13 numerator over an even degree-8
/// denominator) on [-4, 4], outside which erf is ±1 in f32.
#[inline(always)]
pub fn erf(x: F32x4) -> F32x4 {
    let x = x.max(F32x4::splat(-4.0)).min(F32x4::splat(4.0));
    let x2 = x * x;
    #[rustfmt::skip]
    let p = horner!(x2; -2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4,
        -2.954_6e-3, -1.609_603_3e-2);
    let q =
        horner!(x2; -1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2);
    x * p / q
}

/// `eˣ` within 2 ulp for x ≥ -87 (below, the smallest normal f32): Cephes' `expf`, `2ⁿ·e^r` with
/// `|r| ≤ ln2/2` and a degree-6 polynomial for `e^r`.
#[inline(always)]
pub fn exp(x: F32x4) -> F32x4 {
    let x = x.max(F32x4::splat(-87.0)).min(F32x4::splat(88.0));
    let n = (x * F32x4::splat(core::f32::consts::LOG2_E)).round();
    // ln 2 in two parts, so that n·ln2 is exact in the high part.
    let r = n.mul_add(F32x4::splat(-0.693_359_4), x);
    let r = n.mul_add(F32x4::splat(2.121_944_4e-4), r);
    let p = horner!(r; 1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5);
    let e_r = p.mul_add(r * r, r) + F32x4::splat(1.0);
    e_r * n.exp2_int()
}

/// In place over one row of attention scores: `softmax(scale·s + mask)`, where `mask` is 0 for a key
/// and the most negative f32 for padding, as Hugging Face adds it (a fully masked row comes out uniform).
pub fn softmax(scores: &mut [f32], scale: f32, mask: &[f32]) {
    assert_eq!(
        scores.len(),
        mask.len(),
        "softmax: one mask value per score"
    );
    let n = scores.len();
    let whole = n / 4 * 4;
    let (s, m) = (scores.as_mut_ptr(), mask.as_ptr());
    let scale4 = F32x4::splat(scale);
    // SAFETY: every access is below n, the length of both slices (vectors end at `whole` ≤ n).
    unsafe {
        let mut max4 = F32x4::splat(f32::MIN);
        for i in (0..whole).step_by(4) {
            let x = F32x4::load(s.add(i)).mul_add(scale4, F32x4::load(m.add(i)));
            x.store(s.add(i));
            max4 = max4.max(x);
        }
        let mut max = max4.to_array().into_iter().fold(f32::MIN, f32::max);
        for i in whole..n {
            *s.add(i) = *s.add(i) * scale + *m.add(i);
            max = max.max(*s.add(i));
        }
        let (max4, mut sum4) = (F32x4::splat(max), F32x4::splat(0.0));
        for i in (0..whole).step_by(4) {
            let e = exp(F32x4::load(s.add(i)) - max4);
            e.store(s.add(i));
            sum4 = sum4 + e;
        }
        let mut sum = sum4.to_array().iter().sum::<f32>();
        for i in whole..n {
            *s.add(i) = exp(F32x4::splat(*s.add(i) - max)).to_array()[0];
            sum += *s.add(i);
        }
        let inv = 1.0 / sum;
        let inv4 = F32x4::splat(inv);
        for i in (0..whole).step_by(4) {
            (F32x4::load(s.add(i)) * inv4).store(s.add(i));
        }
        for i in whole..n {
            *s.add(i) *= inv;
        }
    }
}

/// softmax(scale·QKᵀ + mask)·V for every batch item and head, with [`Scores`]' bias and window. `qkv` is
/// `[batch, seq, 3 × hidden]`: each row Q, K, V side by side, each with the heads side by side (as the
/// fused projection writes them); `attention_mask[b * seq + j]` is 1 where key `j` of item `b` is a token,
/// 0 where it is padding; `bias` is `[1 | batch, heads, seq, seq]`. Returns the context
/// `[batch, seq, hidden]`, heads concatenated. A windowed layer's queries go in blocks, each over the keys
/// it reaches; a query that reaches no token gets zeros.
pub fn self_attention(
    (batch, seq, hidden): (usize, usize, usize),
    num_heads: usize,
    qkv: &[f32],
    attention_mask: &[f32],
    bias: Option<&[f32]>,
    scores: Scores,
) -> Vec<f32> {
    let head_dim = hidden / num_heads;
    let row = 3 * hidden;
    let block = scores.window.map_or(seq, |window| window.max(16)).min(seq);
    let widest = scores
        .window
        .map_or(seq, |window| (block + 2 * window).min(seq));
    let mut context = vec![0.0; batch * seq * hidden];
    let mut key_t = vec![0.0; head_dim * seq];
    let mut probs = vec![0.0; block * widest];
    let mut row_mask = vec![0.0; widest];
    for b in 0..batch {
        let item = &qkv[b * seq * row..(b + 1) * seq * row];
        // As Hugging Face: a padded key's score gets the most negative f32.
        let padding: Vec<f32> = attention_mask[b * seq..(b + 1) * seq]
            .iter()
            .map(|&token| if token == 0.0 { f32::MIN } else { 0.0 })
            .collect();
        let has_tokens = padding.contains(&0.0);
        let out = b * seq * hidden;
        for h in 0..num_heads {
            let (q, k, v) = (
                h * head_dim,
                hidden + h * head_dim,
                2 * hidden + h * head_dim,
            );
            // This head's bias rows, of this item or of the one item that all share.
            let bias = bias.map(|bias| {
                let items = bias.len() / (num_heads * seq * seq);
                let at = ((b % items) * num_heads + h) * seq * seq;
                &bias[at..at + seq * seq]
            });
            // Kᵀ for this head, [head_dim, seq], so that QKᵀ is a plain row-major product.
            for (j, x) in item.chunks_exact(row).enumerate() {
                for (t, &x) in x[k..k + head_dim].iter().enumerate() {
                    key_t[t * seq + j] = x;
                }
            }
            for start in (0..seq).step_by(block.max(1)) {
                let queries = start..(start + block).min(seq);
                let keys = scores.keys(&queries, seq);
                let (rows, columns) = (queries.len(), keys.len());
                let probs = &mut probs[..rows * columns];
                let q_rows = Matrix {
                    data: &item[start * row + q..],
                    row_stride: row,
                };
                let k_t = Matrix {
                    data: &key_t[keys.start..],
                    row_stride: seq,
                };
                gemm(
                    (rows, columns, head_dim),
                    q_rows,
                    k_t,
                    probs,
                    columns,
                    Epilogue::default(),
                );
                for (i, p) in queries.zip(probs.chunks_exact_mut(columns)) {
                    let bias = bias.map(|bias| &bias[i * seq + keys.start..i * seq + keys.end]);
                    // The padding mask as it is, or this query's own: with its window, or with a
                    // bias added after the scale. A query that reaches no token gets zeros.
                    let own_row = scores.window.is_some() || (bias.is_some() && !scores.scale_bias);
                    let mask: &[f32] = if own_row {
                        let row = &mut row_mask[..columns];
                        row.copy_from_slice(&padding[keys.clone()]);
                        if let Some(window) = scores.window {
                            for (m, j) in row.iter_mut().zip(keys.clone()) {
                                if i.abs_diff(j) > window {
                                    *m = f32::MIN;
                                }
                            }
                        }
                        if row.iter().all(|&m| m == f32::MIN) {
                            p.fill(0.0);
                            continue;
                        }
                        if let (Some(bias), false) = (bias, scores.scale_bias) {
                            row.iter_mut().zip(bias).for_each(|(m, b)| *m += b);
                        }
                        row
                    } else if has_tokens {
                        &padding[keys.clone()]
                    } else {
                        p.fill(0.0);
                        continue;
                    };
                    if let (Some(bias), true) = (bias, scores.scale_bias) {
                        p.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                    }
                    softmax(p, scores.scale, mask);
                }
                let probs = Matrix {
                    data: probs,
                    row_stride: columns,
                };
                let v_rows = Matrix {
                    data: &item[keys.start * row + v..],
                    row_stride: row,
                };
                gemm(
                    (rows, head_dim, columns),
                    probs,
                    v_rows,
                    &mut context[out + start * hidden + h * head_dim..out + seq * hidden],
                    hidden,
                    Epilogue::default(),
                );
            }
        }
    }
    context
}

/// Largest |a − b| over two flex tensors' f32 values (for the tests of the flex glue).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: burn_flex::FlexTensor, b: burn_flex::FlexTensor) -> f32 {
    let [a, b] = [a, b].map(|t| t.into_data().try_into_vec::<f32>().unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    fn gelu_f64(x: f64) -> f64 {
        0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))
    }

    #[test]
    fn erf_matches_libm_across_its_range() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            let got = erf(F32x4::splat(x)).to_array()[0] as f64;
            worst = worst.max((got - libm::erf(x as f64)).abs());
        }
        assert!(worst < 1e-6, "erf off by {worst}");
    }

    #[test]
    fn exp_matches_libm_relatively() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp(F32x4::splat(x)).to_array()[0] as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "exp off by {worst} (relative)");
    }

    /// Both layouts of `b`: `[k, n]` ([`gemm`]) and `[n, k]` ([`gemm_transposed`]).
    #[test]
    fn gemm_matches_f64_on_edge_shapes_with_bias_and_gelu() {
        // Rows and columns off the 4×8 block grid, depth across two passes, rows across two row
        // blocks, strided operands.
        for (&(m, n, k), transposed) in [
            (1, 1, 1),
            (3, 7, 5),
            (5, 8, 300),
            (13, 19, 257),
            (16, 40, 64),
            (21, 17, 600),
            (MC + 3, 17, 300),
            (9, 2, 0),
        ]
        .iter()
        .flat_map(|shape| [(shape, false), (shape, true)])
        {
            let (lda, ldb, ldc) = match transposed {
                false => (k + 3, n + 5, n + 2),
                true => (k + 3, k + 5, n + 2),
            };
            let a = values(m * lda, 1);
            let b = values(k.max(n).max(1) * ldb, 2);
            let b_at = |p: usize, j: usize| match transposed {
                false => b[p * ldb + j],
                true => b[j * ldb + p],
            };
            let gemm = match transposed {
                false => gemm,
                true => gemm_transposed,
            };
            let bias = values(n, 3);
            for gelu_on in [false, true] {
                let mut c = vec![f32::NAN; m * ldc];
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    gelu: gelu_on,
                };
                let (a_m, b_m) = (
                    Matrix {
                        data: &a,
                        row_stride: lda,
                    },
                    Matrix {
                        data: &b,
                        row_stride: ldb,
                    },
                );
                gemm((m, n, k), a_m, b_m, &mut c, ldc, epilogue);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|p| a[i * lda + p] as f64 * b_at(p, j) as f64)
                            .sum();
                        let want = if gelu_on {
                            gelu_f64(dot + bias[j] as f64)
                        } else {
                            dot + bias[j] as f64
                        };
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "({m},{n},{k}) transposed={transposed} gelu={gelu_on} [{i},{j}]: {got} vs {want}"
                        );
                    }
                    // Padding between rows is untouched.
                    assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|x| x.is_nan()));
                }
            }
        }
    }

    /// Plain, with MPNet's bias (after the scale, one for all items), DeBERTa's (before it, per item), and
    /// a window over blocks of 16 queries (the second item's last queries reach only padding: zeros).
    #[test]
    fn self_attention_matches_f64_with_padding_bias_and_window() {
        let (batch, seq, hidden, heads) = (2, 40, 12, 3);
        let d = hidden / heads;
        let qkv = values(batch * seq * 3 * hidden, 4);
        let mut attention_mask = vec![1.0; batch * seq];
        attention_mask[seq + 25..2 * seq]
            .iter_mut()
            .for_each(|p| *p = 0.0);
        let plain = Scores::plain(d);
        let shared = values(heads * seq * seq, 5);
        let per_item = values(batch * heads * seq * seq, 6);
        let cases = [
            (None, plain),
            (Some(&shared), plain),
            (
                Some(&per_item),
                Scores {
                    scale: 0.2,
                    scale_bias: true,
                    window: None,
                },
            ),
            (
                None,
                Scores {
                    window: Some(5),
                    ..plain
                },
            ),
        ];
        for (bias, scores) in cases {
            check_self_attention(
                (batch, seq, hidden, heads),
                &qkv,
                &attention_mask,
                bias.map(Vec::as_slice),
                scores,
            );
        }
    }

    fn check_self_attention(
        (batch, seq, hidden, heads): (usize, usize, usize, usize),
        qkv: &[f32],
        attention_mask: &[f32],
        bias: Option<&[f32]>,
        scores: Scores,
    ) {
        let got = self_attention(
            (batch, seq, hidden),
            heads,
            qkv,
            attention_mask,
            bias,
            scores,
        );
        let d = hidden / heads;
        let scale = scores.scale as f64;
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    // Part `p` (0 Q, 1 K, 2 V) of row `j`, this head, dimension `t`.
                    let at = |p: usize, j: usize, t: usize| {
                        qkv[(b * seq + j) * 3 * hidden + p * hidden + h * d + t] as f64
                    };
                    let bias = |j: usize| {
                        bias.map_or(0.0, |bias| {
                            let items = bias.len() / (heads * seq * seq);
                            bias[(((b % items) * heads + h) * seq + i) * seq + j] as f64
                        })
                    };
                    let logits: Vec<f64> = (0..seq)
                        .map(|j| {
                            let product = (0..d).map(|t| at(0, i, t) * at(1, j, t)).sum::<f64>();
                            match scores.scale_bias {
                                true => (product + bias(j)) * scale,
                                false => product * scale + bias(j),
                            }
                        })
                        .collect();
                    let keep: Vec<usize> = (0..seq)
                        .filter(|&j| attention_mask[b * seq + j] != 0.0)
                        .filter(|&j| scores.window.is_none_or(|w| i.abs_diff(j) <= w))
                        .collect();
                    let max = keep.iter().map(|&j| logits[j]).fold(f64::MIN, f64::max);
                    let sum: f64 = keep.iter().map(|&j| (logits[j] - max).exp()).sum();
                    for t in 0..d {
                        let want: f64 = keep
                            .iter()
                            .map(|&j| (logits[j] - max).exp() / sum * at(2, j, t))
                            .sum();
                        let got = got[(b * seq + i) * hidden + h * d + t] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{scores:?} b{b} h{h} q{i} t{t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

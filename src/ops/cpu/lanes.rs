//! Four f32 lanes, every operation forced inline: the shipped .wasm is built at opt-level z, where
//! LLVM would otherwise leave even a one-instruction wrapper as a call inside the hot loops.
#[cfg(target_arch = "wasm32")]
use core::arch::wasm32::*;

#[derive(Clone, Copy)]
pub struct F32x4(
    #[cfg(target_arch = "wasm32")] v128,
    #[cfg(not(target_arch = "wasm32"))] [f32; 4],
);

#[cfg(target_arch = "wasm32")]
impl F32x4 {
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        Self(f32x4_splat(x))
    }
    /// # Safety
    /// `p` must point at four readable floats.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        Self(unsafe { v128_load(p as *const v128) })
    }
    /// # Safety
    /// `p` must point at four writable floats.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        unsafe { v128_store(p as *mut v128, self.0) }
    }
    #[inline(always)]
    pub fn to_array(self) -> [f32; 4] {
        [
            f32x4_extract_lane::<0>(self.0),
            f32x4_extract_lane::<1>(self.0),
            f32x4_extract_lane::<2>(self.0),
            f32x4_extract_lane::<3>(self.0),
        ]
    }
    /// `self·m + a`: one instruction in the relaxed-SIMD build (fused where the CPU has FMA, so one
    /// rounding or two), a multiply and an add in SIMD128, which has no fused multiply-add.
    #[inline(always)]
    pub fn mul_add(self, m: Self, a: Self) -> Self {
        #[cfg(target_feature = "relaxed-simd")]
        {
            Self(f32x4_relaxed_madd(self.0, m.0, a.0))
        }
        #[cfg(not(target_feature = "relaxed-simd"))]
        {
            self * m + a
        }
    }
    /// Lane-wise max, not NaN-propagating (cheaper: `pmax`).
    #[inline(always)]
    pub fn max(self, o: Self) -> Self {
        Self(f32x4_pmax(self.0, o.0))
    }
    #[inline(always)]
    pub fn min(self, o: Self) -> Self {
        Self(f32x4_pmin(self.0, o.0))
    }
    /// Round half to even.
    #[inline(always)]
    pub fn round(self) -> Self {
        Self(f32x4_nearest(self.0))
    }
    /// `2ⁿ` for integral lanes `n` in [-126, 127], built in the exponent bits.
    #[inline(always)]
    pub fn exp2_int(self) -> Self {
        Self(i32x4_shl(
            i32x4_add(i32x4_trunc_sat_f32x4(self.0), i32x4_splat(127)),
            23,
        ))
    }
    /// Rounded half to even and stored as four i16 (saturating).
    ///
    /// # Safety
    /// `p` must point at four writable i16.
    #[inline(always)]
    pub unsafe fn store_i16(self, p: *mut i16) {
        let ints = i32x4_trunc_sat_f32x4(f32x4_nearest(self.0));
        unsafe { v128_store64_lane::<0>(i16x8_narrow_i32x4(ints, ints), p as *mut u64) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl F32x4 {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        Self(self.0.map(f))
    }
    #[inline(always)]
    fn zip(self, o: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Self(core::array::from_fn(|i| f(self.0[i], o.0[i])))
    }
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        Self([x; 4])
    }
    /// # Safety
    /// `p` must point at four readable floats.
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> Self {
        Self(unsafe { (p as *const [f32; 4]).read_unaligned() })
    }
    /// # Safety
    /// `p` must point at four writable floats.
    #[inline(always)]
    pub unsafe fn store(self, p: *mut f32) {
        unsafe { (p as *mut [f32; 4]).write_unaligned(self.0) }
    }
    #[inline(always)]
    pub fn to_array(self) -> [f32; 4] {
        self.0
    }
    /// `self·m + a` with two roundings, as in SIMD128.
    #[inline(always)]
    pub fn mul_add(self, m: Self, a: Self) -> Self {
        self * m + a
    }
    #[inline(always)]
    pub fn max(self, o: Self) -> Self {
        self.zip(o, |x, y| if x < y { y } else { x })
    }
    #[inline(always)]
    pub fn min(self, o: Self) -> Self {
        self.zip(o, |x, y| if y < x { y } else { x })
    }
    #[inline(always)]
    pub fn round(self) -> Self {
        self.map(f32::round_ties_even)
    }
    #[inline(always)]
    pub fn exp2_int(self) -> Self {
        self.map(|n| f32::from_bits(((n as i32 + 127) as u32) << 23))
    }
    /// # Safety
    /// `p` must point at four writable i16.
    #[inline(always)]
    pub unsafe fn store_i16(self, p: *mut i16) {
        let ints = self.0.map(|x| x.round_ties_even() as i16);
        unsafe { (p as *mut [i16; 4]).write_unaligned(ints) }
    }
}

/// `+ - × ÷` lane by lane, through the two `zip`s above.
macro_rules! lane_ops {
    ($($trait:ident $method:ident $wasm:ident $op:tt),+) => {$(
        impl core::ops::$trait for F32x4 {
            type Output = Self;
            #[inline(always)]
            fn $method(self, o: Self) -> Self {
                #[cfg(target_arch = "wasm32")]
                return Self($wasm(self.0, o.0));
                #[cfg(not(target_arch = "wasm32"))]
                return self.zip(o, |x, y| x $op y);
            }
        }
    )+};
}
lane_ops!(Add add f32x4_add +, Sub sub f32x4_sub -, Mul mul f32x4_mul *, Div div f32x4_div /);

/// Eight i16 lanes: int8 weights widened, or activations quantised to 16 bits ([`super::q8`]).
#[derive(Clone, Copy)]
pub struct I16x8(
    #[cfg(target_arch = "wasm32")] v128,
    #[cfg(not(target_arch = "wasm32"))] [i16; 8],
);

/// Four i32 lanes: the sums of [`I16x8`] products.
#[derive(Clone, Copy)]
pub struct I32x4(
    #[cfg(target_arch = "wasm32")] v128,
    #[cfg(not(target_arch = "wasm32"))] [i32; 4],
);

#[cfg(target_arch = "wasm32")]
impl I16x8 {
    #[inline(always)]
    pub fn zero() -> Self {
        Self(i16x8_splat(0))
    }
    /// # Safety
    /// `p` must point at eight readable i16.
    #[inline(always)]
    pub unsafe fn load(p: *const i16) -> Self {
        Self(unsafe { v128_load(p as *const v128) })
    }
    /// Eight int8 values at `p`, widened.
    ///
    /// # Safety
    /// `p` must point at eight readable i8.
    #[inline(always)]
    pub unsafe fn load_widened(p: *const i8) -> Self {
        Self(unsafe { i16x8_load_extend_i8x8(p) })
    }
    /// The two values at `p`, four times over.
    ///
    /// # Safety
    /// `p` must point at two readable i16.
    #[inline(always)]
    pub unsafe fn load_pair_splat(p: *const i16) -> Self {
        Self(unsafe { v128_load32_splat(p as *const u32) })
    }
    /// Eight columns of two consecutive rows, paired by column and widened: `(r0[0], r1[0], …, r0[3],
    /// r1[3])` and the same for columns 4 to 7.
    ///
    /// # Safety
    /// `row0` and `row1` must each point at eight readable i8.
    #[inline(always)]
    pub unsafe fn load_row_pairs(row0: *const i8, row1: *const i8) -> (Self, Self) {
        let (a, b) = unsafe {
            (
                v128_load64_zero(row0 as *const u64),
                v128_load64_zero(row1 as *const u64),
            )
        };
        let pairs = i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(a, b);
        (
            Self(i16x8_extend_low_i8x16(pairs)),
            Self(i16x8_extend_high_i8x16(pairs)),
        )
    }
}

#[cfg(target_arch = "wasm32")]
impl I32x4 {
    #[inline(always)]
    pub fn zero() -> Self {
        Self(i32x4_splat(0))
    }
    /// `self + (a₀b₀ + a₁b₁, a₂b₂ + a₃b₃, …)`: `i32x4.dot_i16x8_s`, eight products in one instruction.
    #[inline(always)]
    pub fn dot_add(self, a: I16x8, b: I16x8) -> Self {
        Self(i32x4_add(self.0, i32x4_dot_i16x8(a.0, b.0)))
    }
    #[inline(always)]
    pub fn to_f32(self) -> F32x4 {
        F32x4(f32x4_convert_i32x4(self.0))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl I16x8 {
    #[inline(always)]
    pub fn zero() -> Self {
        Self([0; 8])
    }
    /// # Safety
    /// `p` must point at eight readable i16.
    #[inline(always)]
    pub unsafe fn load(p: *const i16) -> Self {
        Self(unsafe { (p as *const [i16; 8]).read_unaligned() })
    }
    /// # Safety
    /// `p` must point at eight readable i8.
    #[inline(always)]
    pub unsafe fn load_widened(p: *const i8) -> Self {
        Self(unsafe { (p as *const [i8; 8]).read_unaligned() }.map(i16::from))
    }
    /// # Safety
    /// `p` must point at two readable i16.
    #[inline(always)]
    pub unsafe fn load_pair_splat(p: *const i16) -> Self {
        let [x, y] = unsafe { (p as *const [i16; 2]).read_unaligned() };
        Self([x, y, x, y, x, y, x, y])
    }
    /// # Safety
    /// `row0` and `row1` must each point at eight readable i8.
    #[inline(always)]
    pub unsafe fn load_row_pairs(row0: *const i8, row1: *const i8) -> (Self, Self) {
        let (a, b) = unsafe {
            (
                (row0 as *const [i8; 8]).read_unaligned(),
                (row1 as *const [i8; 8]).read_unaligned(),
            )
        };
        let half = |c: usize| {
            Self(core::array::from_fn(|i| {
                let column = c + i / 2;
                (if i % 2 == 0 { a[column] } else { b[column] }) as i16
            }))
        };
        (half(0), half(4))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl I32x4 {
    #[inline(always)]
    pub fn zero() -> Self {
        Self([0; 4])
    }
    /// Wrapping like the instruction (the callers keep the sums far from overflow).
    #[inline(always)]
    pub fn dot_add(self, a: I16x8, b: I16x8) -> Self {
        Self(core::array::from_fn(|i| {
            let product = |l: usize| a.0[l] as i32 * b.0[l] as i32;
            self.0[i].wrapping_add(product(2 * i).wrapping_add(product(2 * i + 1)))
        }))
    }
    #[inline(always)]
    pub fn to_f32(self) -> F32x4 {
        F32x4(self.0.map(|x| x as f32))
    }
}

//! Reductions across one workgroup, for the `Tiled` kernels: a tree in workgroup memory, or with
//! `subgroups` (`kernels: 'tiled-subgroups'`, where the adapter has them) one subgroup step, then one pass
//! over the subgroups' partial results. Every unit of the workgroup must call them (they hold barriers)
//! and gets the result.

use cubecl::prelude::*;

/// The sum of `value` over the workgroup's `threads` units (a power of two). `scratch` holds `threads`
/// values.
#[cube]
pub fn workgroup_sum<F: Float>(
    value: F,
    scratch: &mut Shared<[F]>,
    #[comptime] threads: usize,
    #[comptime] subgroups: bool,
) -> F {
    workgroup_reduce::<F>(value, scratch, threads, subgroups, false)
}

/// The maximum of `value` over the workgroup, as [`workgroup_sum`].
#[cube]
pub fn workgroup_max<F: Float>(
    value: F,
    scratch: &mut Shared<[F]>,
    #[comptime] threads: usize,
    #[comptime] subgroups: bool,
) -> F {
    workgroup_reduce::<F>(value, scratch, threads, subgroups, true)
}

#[cube]
fn combine<F: Float>(a: F, b: F, #[comptime] max: bool) -> F {
    if max { F::max(a, b) } else { a + b }
}

#[cube]
fn workgroup_reduce<F: Float>(
    value: F,
    scratch: &mut Shared<[F]>,
    #[comptime] threads: usize,
    #[comptime] subgroups: bool,
    #[comptime] max: bool,
) -> F {
    let unit = UNIT_POS as usize;
    let total = if subgroups {
        let partial = if max {
            plane_max(value)
        } else {
            plane_sum(value)
        };
        let plane = PLANE_DIM as usize;
        if UNIT_POS_PLANE == 0 {
            scratch[unit / plane] = partial;
        }
        sync_cube();
        let mut total = scratch[0];
        for p in 1..threads / plane {
            total = combine::<F>(total, scratch[p], max);
        }
        total
    } else {
        scratch[unit] = value;
        sync_cube();
        #[unroll]
        for level in 1..threads.trailing_zeros() as usize + 1 {
            let half = threads >> level;
            if unit < half {
                scratch[unit] = combine::<F>(scratch[unit], scratch[unit + half], max);
            }
            sync_cube();
        }
        scratch[0]
    };
    // Nobody writes `scratch` again before everyone has read it.
    sync_cube();
    total
}

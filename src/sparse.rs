//! Sparse-aware copying: SEEK_DATA/SEEK_HOLE + copy_file_range so holes stay holes.
//! OWNER: disk helper.

use anyhow::Result;
use std::fs::File;

/// Copy `len` bytes from `src` at `src_off` to `dst` at `dst_off`, skipping holes in `src`.
/// `progress` is called with the number of bytes handled so far.
pub fn copy_range(
    _src: &File,
    _src_off: u64,
    _dst: &File,
    _dst_off: u64,
    _len: u64,
    _progress: &mut dyn FnMut(u64),
) -> Result<()> {
    anyhow::bail!("not implemented")
}

/// Data (non-hole) ranges of `file` within `off..off+len`, as (start, length).
pub fn data_ranges(_file: &File, _off: u64, _len: u64) -> Result<Vec<(u64, u64)>> {
    anyhow::bail!("not implemented")
}

//! Manual measurement (ignored by default): unpack `$NODEFORGE_PERF_XZ` into a temp cache and
//! compare with `xz -dc > /dev/null` on the same file.
//! Run: NODEFORGE_PERF_XZ=/path/base.img.xz cargo test --release --test base_perf -- --ignored --nocapture

use std::time::Instant;

#[test]
#[ignore]
fn unpack_vs_xz_cli() {
    let Ok(input) = std::env::var("NODEFORGE_PERF_XZ") else {
        eprintln!("set NODEFORGE_PERF_XZ");
        return;
    };
    let input = std::path::PathBuf::from(input);
    let t = Instant::now();
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("xz -T0 -dc '{}' > /dev/null", input.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let cli = t.elapsed().as_secs_f64();
    let cache = tempfile::tempdir_in(input.parent().unwrap()).unwrap();
    let t = Instant::now();
    let out = nodeforge::base::unpack_to_cache(&input, &"0".repeat(64), cache.path()).unwrap();
    let ours = t.elapsed().as_secs_f64();
    let len = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "xz -dc: {cli:.2} s; unpack_to_cache: {ours:.2} s ({:.2}x) for {} MiB",
        ours / cli,
        len >> 20
    );
}

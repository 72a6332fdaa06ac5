//! Cold start of a plugin with and without the compile cache: the library call that loads a
//! plugin (compile or deserialize, link, instantiate, describe), and the whole `swarmtel plugin
//! inspect` process, for a small release guest and a large unoptimized one.
//!
//! Run: `cargo bench -p swarmtel --bench cold_start`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use swarmtel::cache::CompileCache;
use swarmtel::plugin;
use swarmtel::sandbox::Sandbox;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the guests: the release set, and request-stats unoptimized (a large component).
fn guests() -> (PathBuf, PathBuf) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/build-guests.sh"))
        .status()
        .expect("build guests");
    assert!(status.success());
    let status = Command::new("cargo")
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", repo_root().join("target/guests"))
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "-p",
            "request-stats",
        ])
        .status()
        .expect("build the debug guest");
    assert!(status.success());
    let guests = repo_root().join("target/guests/wasm32-wasip2");
    (
        guests.join("release/request_stats.wasm"),
        guests.join("debug/request_stats.wasm"),
    )
}

fn cold_start(c: &mut Criterion) {
    let (small, large) = guests();
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache_path = cache_dir.path().join("cache");
    let mut group = c.benchmark_group("cold_start");
    group.sample_size(10);
    for (label, path) in [("release_235KB", &small), ("debug_8MB", &large)] {
        let size = std::fs::metadata(path).unwrap().len();
        eprintln!("{label}: {} is {size} bytes", path.display());
        let plain = Arc::new(Sandbox::new().unwrap());
        group.bench_function(format!("load/{label}/no_cache"), |b| {
            b.iter(|| plugin::load_component(&plain, path).expect("load"))
        });
        let mut cached = Sandbox::new().unwrap();
        cached.set_cache(CompileCache::open(&cache_path).unwrap());
        let cached = Arc::new(cached);
        plugin::load_component(&cached, path).expect("warm the cache");
        group.bench_function(format!("load/{label}/cache_warm"), |b| {
            b.iter(|| plugin::load_component(&cached, path).expect("load"))
        });
        let inspect = |cache: &Path| {
            let output = Command::new(env!("CARGO_BIN_EXE_swarmtel"))
                .args(["plugin", "inspect"])
                .arg(path)
                .env("SWARMTEL_CACHE_DIR", cache)
                .output()
                .expect("run swarmtel");
            assert!(output.status.success());
        };
        group.bench_function(format!("process/{label}/cache_cold"), |b| {
            b.iter(|| {
                let fresh = tempfile::tempdir().unwrap();
                inspect(&fresh.path().join("cache"))
            })
        });
        inspect(&cache_path);
        group.bench_function(format!("process/{label}/cache_warm"), |b| {
            b.iter(|| inspect(&cache_path))
        });
    }
    group.finish();
}

criterion_group!(benches, cold_start);
criterion_main!(benches);

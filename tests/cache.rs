//! The compile cache: hits on the second run, private files, tampered entries thrown away and
//! recompiled (never loaded), a shared folder refused, `swarmtel cache ls|clear`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use support::*;

const EVENTS: &str = concat!(
    r#"{"event":"test_start","role":"worker","node":"worker-0","time":1700000000}"#,
    "\n",
    r#"{"event":"request","role":"worker","node":"worker-0","time":1700000001,"request_type":"GET","name":"/a","response_time":3}"#,
    "\n",
    r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1700000002}"#,
    "\n",
);

fn config(workspace: &Workspace, cache_section: &str) -> std::path::PathBuf {
    workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n{cache_section}\n[[plugins]]\npath = {}\n[[plugins]]\npath = {}\n",
            toml_path(&guest("custom_telemetry")),
            toml_path(&guest("request_stats")),
        ),
    )
}

fn replay_with_cache(config: &Path, cache: &Path) -> Output {
    let output = swarmtel()
        .env("SWARMTEL_CACHE_DIR", cache)
        .args(["replay", "--config"])
        .arg(config)
        .arg(write_events(config))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn write_events(config: &Path) -> std::path::PathBuf {
    let path = config.with_file_name("events.ndjson");
    std::fs::write(&path, EVENTS).unwrap();
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn entries(cache: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    entries.sort();
    entries
}

#[test]
fn second_run_hits_and_files_are_private() {
    let workspace = Workspace::new();
    let cache = workspace.path("cache");
    let config = config(&workspace, "");
    let first = replay_with_cache(&config, &cache);
    assert!(
        stderr(&first).contains("0 hits, 2 compiled, 0 rejected"),
        "{}",
        stderr(&first)
    );
    let second = replay_with_cache(&config, &cache);
    assert!(
        stderr(&second).contains("2 hits, 0 compiled, 0 rejected"),
        "{}",
        stderr(&second)
    );
    assert_eq!(first.stdout, second.stdout);

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    let files = entries(&cache);
    assert_eq!(files.len(), 2);
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
}

#[test]
fn a_tampered_entry_is_thrown_away_and_recompiled() {
    let workspace = Workspace::new();
    let cache = workspace.path("cache");
    let config = config(&workspace, "");
    let clean = replay_with_cache(&config, &cache);
    let files = entries(&cache);
    // Flip one byte of compiled code in one entry, and cut the other one short.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&files[0], &bytes).unwrap();
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..20]).unwrap();

    let after = replay_with_cache(&config, &cache);
    let text = stderr(&after);
    assert!(text.contains("0 hits, 0 compiled, 2 rejected"), "{text}");
    assert!(text.contains("content hash does not match"), "{text}");
    assert!(text.contains("not a swarmtel cache entry"), "{text}");
    assert_eq!(
        after.stdout, clean.stdout,
        "recompiled plugins behave the same"
    );

    // The rejected entries were replaced by good ones.
    let again = replay_with_cache(&config, &cache);
    assert!(stderr(&again).contains("2 hits, 0 compiled, 0 rejected"));
}

#[test]
fn a_folder_others_can_write_is_refused_and_the_run_goes_on() {
    let workspace = Workspace::new();
    let cache = workspace.path("shared-cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = config(&workspace, "");
    let output = replay_with_cache(&config, &cache);
    let text = stderr(&output);
    assert!(text.contains("refused: permissions 777"), "{text}");
    assert!(text.contains("compiling without a cache"), "{text}");
    assert!(entries(&cache).is_empty(), "nothing was written to it");
    assert_eq!(
        json_lines(&output.stdout).len(),
        4 + 2 + 2,
        "telemetry, plugin summaries and request summaries (/a and Aggregated)"
    );
}

#[test]
fn the_cache_can_be_turned_off() {
    let workspace = Workspace::new();
    let cache = workspace.path("cache");
    let config = config(&workspace, "[cache]\nenabled = false\n");
    let output = replay_with_cache(&config, &cache);
    assert!(!stderr(&output).contains("compile cache"));
    assert!(!cache.exists());
}

#[test]
fn cache_ls_and_clear() {
    let workspace = Workspace::new();
    let cache = workspace.path("cache");
    let config = config(&workspace, "");
    replay_with_cache(&config, &cache);
    let ls = swarmtel()
        .args(["cache", "ls", "--dir"])
        .arg(&cache)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("2 entries"), "{text}");
    assert!(text.contains("-wasmtime48.0.8.cwasm"), "{text}");
    let clear = swarmtel()
        .args(["cache", "clear"])
        .env("SWARMTEL_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&clear.stdout).contains("removed 2 entries"));
    assert!(entries(&cache).is_empty());
}

// `swarmtel cache build` compiles every plugin of a config ahead of time, into the folder the
// config's runs use, so the first replay afterwards only hits; a second build finds them
// cached. A config without a cache is an error unless a folder is given.
#[test]
fn cache_build_compiles_every_plugin_ahead_of_time() {
    let workspace = Workspace::new();
    let cache = workspace.path("cache");
    let config = config(
        &workspace,
        &format!("[cache]\ndir = {}\n", toml_path(&cache)),
    );
    let build = |config: &Path| {
        let output = swarmtel()
            .args(["cache", "build", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = build(&config);
    assert_eq!(
        first.matches("\ncompiled").count() + usize::from(first.starts_with("compiled")),
        2,
        "{first}"
    );
    assert!(
        first.contains("custom_telemetry.wasm") && first.contains("request_stats.wasm"),
        "{first}"
    );
    assert!(
        first.contains("2 plugins: 2 compiled, 0 already cached, in "),
        "{first}"
    );
    assert_eq!(entries(&cache).len(), 2);
    let second = build(&config);
    assert!(
        second.contains("2 plugins: 0 compiled, 2 already cached"),
        "{second}"
    );
    let replay = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .arg(write_events(&config))
        .output()
        .unwrap();
    assert!(
        stderr(&replay).contains(": 2 hits, 0 compiled, 0 rejected"),
        "{}",
        stderr(&replay)
    );

    let off = config_with_cache_off(&workspace);
    let refused = swarmtel()
        .args(["cache", "build", "--config"])
        .arg(&off)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("[cache] enabled = false: there is no cache to build"));
    let elsewhere = workspace.path("elsewhere");
    let given = swarmtel()
        .args(["cache", "build", "--dir"])
        .arg(&elsewhere)
        .arg("--config")
        .arg(&off)
        .output()
        .unwrap();
    assert!(given.status.success(), "{}", stderr(&given));
    assert_eq!(entries(&elsewhere).len(), 2);
}

fn config_with_cache_off(workspace: &Workspace) -> std::path::PathBuf {
    let path = config(workspace, "[cache]\nenabled = false\n");
    let off = path.with_file_name("off.toml");
    std::fs::rename(&path, &off).unwrap();
    off
}

//! Helpers shared by the test modules: testdata paths, the list of models,
//! running the CLI, deterministic inputs for a model.

#![allow(dead_code)]

use onnxq::ir::types::Dim;
use onnxq::ir::{DataType, Model, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn testdata(rel: &str) -> PathBuf {
    root().join("testdata").join(rel)
}

/// Every well-formed model in testdata/ (everything outside `bad/`).
pub fn good_models() -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(&root().join("testdata"), &mut out);
    out.retain(|p| !p.components().any(|c| c.as_os_str() == "bad"));
    out.sort();
    assert!(out.len() >= 8, "testdata models missing: {out:?}");
    out
}

/// The FP32 models among them (not the already-quantized `golden/` ones).
pub fn float_models() -> Vec<PathBuf> {
    let mut out = good_models();
    out.retain(|p| !p.components().any(|c| c.as_os_str() == "golden"));
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "onnx") {
            out.push(p);
        }
    }
}

/// Runs the onnxq binary.
pub fn onnxq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .output()
        .expect("the onnxq binary runs")
}

/// Runs the binary from the repository root, so relative paths such as
/// `testdata/...` (which onnxq records in the output's provenance metadata)
/// are the same in every clone.
pub fn onnxq_in_repo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the onnxq binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Input names, types and concrete shapes (symbolic dims set to `sym`).
pub fn input_specs(model: &Model, sym: usize) -> Vec<(String, DataType, Vec<usize>)> {
    onnxq::ir::types::input_specs(&model.graph)
        .into_iter()
        .map(|i| {
            let dims = i.dims.expect("inputs have shapes");
            let shape = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    _ => sym,
                })
                .collect();
            (i.name, i.dtype.expect("inputs have types"), shape)
        })
        .collect()
}

/// Deterministic inputs for every input of `model`: floats in [-1, 1),
/// 8-bit integers over their whole range, int64 in [0, 3) (token and type
/// ids every testdata token model takes).
pub fn inputs_for(model: &Model, sym: usize, seed: u64) -> Vec<(String, Tensor)> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    input_specs(model, sym)
        .into_iter()
        .map(|(name, dt, shape)| {
            let n: usize = shape.iter().product();
            let mut next = || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                state >> 40
            };
            let t = match dt {
                DataType::Float => {
                    let data: Vec<f32> = (0..n)
                        .map(|_| (next() as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                        .collect();
                    Tensor::from_f32(shape, &data)
                }
                DataType::Uint8 => {
                    let data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    Tensor::from_u8(shape, &data)
                }
                DataType::Int8 => {
                    let data: Vec<i8> = (0..n).map(|_| next() as u8 as i8).collect();
                    Tensor::from_i8(shape, &data)
                }
                DataType::Int64 => {
                    let data: Vec<i64> = (0..n).map(|_| (next() % 3) as i64).collect();
                    Tensor::from_i64(shape, &data)
                }
                other => panic!("no test inputs of type {other:?}"),
            };
            (name, t)
        })
        .collect()
}

/// A JSON file, parsed.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A recipe (written into `dir`) that forces a far too narrow range on the
/// digits CNN's first conv output (`bn1`, the BatchNormalization folded
/// into conv1): a deliberately broken layer.
pub fn broken_conv1_recipe(dir: &Path) -> PathBuf {
    let p = dir.join("bad.yaml");
    std::fs::write(&p, "tensors:\n  bn1:\n    range: [0, 0.05]\n").unwrap();
    p
}

/// Every calibration method `--method` takes.
pub const METHODS: &[&str] = &[
    "minmax",
    "avg-minmax",
    "percentile",
    "entropy",
    "mse",
    "auto",
];

/// How a bounded run of the binary ended.
#[derive(Debug)]
pub struct Bounded {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Killed after the time limit.
    pub timed_out: bool,
    /// Peak resident memory, KiB.
    pub max_rss_kib: u64,
    pub stderr: String,
}

/// Runs the binary in `cwd`, killed after `limit`; reports the exit status
/// and the child's peak RSS (wait4's rusage).
pub fn onnxq_bounded(args: &[&str], cwd: &Path, limit: std::time::Duration) -> Bounded {
    use std::process::Stdio;
    let err_path = cwd.join(".stderr");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    // Reaped below with wait4 (for its rusage), not Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_onnxq"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .expect("the onnxq binary runs");
    let pid = child.id() as libc::pid_t;
    let start = std::time::Instant::now();
    let mut timed_out = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child, with valid out-pointers.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert!(r == 0, "wait4 failed");
        if !timed_out && start.elapsed() > limit {
            timed_out = true;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    Bounded {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        timed_out,
        max_rss_kib: usage.ru_maxrss as u64,
        stderr,
    }
}

//! Seeded mutation fuzzing of the command line (issue #29).
//!
//! Each case takes a testdata model, mutates it (bytes: bit flips,
//! interesting bytes, varints, truncation, duplicated/removed/copied
//! chunks; or structure: an attribute's value, a removed attribute, an
//! input renamed, a node's op type swapped for another's), and runs one
//! command on it: `quantize --calib random:1` on most cases, `optimize`,
//! `calibrate`, `check`, `run` or `inspect` on the others. Every run must
//! end by itself within the time limit, with exit code 0, 1 or 3 (never a
//! panic's 101, never a signal), under 4 GiB of peak RSS.
//!
//! Environment: `ONNXQ_FUZZ_CASES` (default 1200, what CI runs),
//! `ONNXQ_FUZZ_SEED` (default 1), `ONNXQ_FUZZ_TIMEOUT` seconds (default
//! 30). `tools/fuzz.sh` runs a long campaign. A failing case is written to
//! `target/fuzz-found/` and named in the assertion; once fixed it goes to
//! `testdata/bad/fuzz/`, which [`fuzz_regressions_stay_fixed`] replays.

use crate::common::*;
use onnxq::onnx::proto::{attribute_proto::AttributeType, ModelProto};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The models mutated (every kind of testdata model: Constant-node weights,
/// subgraphs, QLinear ops, external data, opset-11 forms, a transformer).
const SEEDS: &[&str] = &[
    "digits/mlp.onnx",
    "digits/cnn.onnx",
    "digits/cnn_paddle_opset12.onnx",
    "quirks/transformer_opset17.onnx",
    "quirks/if_branch_opset13.onnx",
    "quirks/opset11_ops.onnx",
    "quirks/gemm_transb_dynbatch_opset13.onnx",
    "golden/qlinearconv/model.onnx",
    "golden/qlinearmatmul/model.onnx",
    "external/model.onnx",
    "detector/detector_opset13.onnx",
];

/// Symbolic dims of the seeds, sized for random samples.
const DIMS: &[&str] = &["--dim", "N=1", "--dim", "batch=1", "--dim", "seq=5"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn interesting(&mut self) -> i64 {
        const V: &[i64] = &[
            0,
            1,
            -1,
            2,
            3,
            4,
            -2,
            -9,
            7,
            8,
            16,
            255,
            256,
            65535,
            1 << 31,
            (1 << 31) - 1,
            1 << 32,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ];
        if self.below(4) == 0 {
            self.below(64) as i64 - 8
        } else {
            V[self.below(V.len())]
        }
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One to four byte-level mutations.
fn mutate_bytes(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(7) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)],
            2 => {
                let v = varint(rng.interesting() as u64);
                let n = (1 + rng.below(10)).min(b.len() - at);
                b.splice(at..at + n, v);
            }
            3 => b.truncate(at),
            4 => {
                let n = (1 + rng.below(64)).min(b.len() - at);
                let chunk = b[at..at + n].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, chunk);
            }
            5 => {
                let n = (1 + rng.below(64)).min(b.len() - at);
                b.drain(at..at + n);
            }
            _ => {
                let n = (1 + rng.below(32)).min(b.len() - at);
                let chunk = b[at..at + n].to_vec();
                let to = rng.below(b.len() - n + 1);
                b[to..to + n].copy_from_slice(&chunk);
            }
        }
    }
    b
}

/// One to three structural mutations of a decoded model.
fn mutate_model(rng: &mut Rng, m: &mut ModelProto) {
    let Some(g) = m.graph.as_mut() else { return };
    if g.node.is_empty() {
        return;
    }
    let ops: Vec<String> = g.node.iter().map(|n| n.op_type().to_string()).collect();
    let names: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(&n.output).cloned())
        .collect();
    for _ in 0..1 + rng.below(3) {
        let k = rng.below(g.node.len());
        let node = &mut g.node[k];
        match rng.below(6) {
            0 | 1 if !node.attribute.is_empty() => {
                let a = rng.below(node.attribute.len());
                let attr = &mut node.attribute[a];
                match attr.r#type() {
                    AttributeType::Int => attr.i = Some(rng.interesting()),
                    AttributeType::Ints if !attr.ints.is_empty() => {
                        let i = rng.below(attr.ints.len());
                        attr.ints[i] = rng.interesting();
                    }
                    AttributeType::Ints => attr.ints.push(rng.interesting()),
                    AttributeType::Float => {
                        attr.f = Some([0.0, -1.0, f32::NAN, f32::INFINITY, 1e30][rng.below(5)])
                    }
                    _ => attr.ints = vec![rng.interesting(); 1 + rng.below(5)],
                }
            }
            2 if !node.attribute.is_empty() => {
                let a = rng.below(node.attribute.len());
                node.attribute.remove(a);
            }
            3 if !node.input.is_empty() => {
                let i = rng.below(node.input.len());
                node.input[i] = names[rng.below(names.len())].clone();
            }
            4 => node.op_type = Some(ops[rng.below(ops.len())].clone()),
            _ => {
                // An attribute another node of the model has.
                let donor = rng.below(ops.len());
                let from = g.node[donor].attribute.clone();
                if !from.is_empty() {
                    let a = from[rng.below(from.len())].clone();
                    g.node[k].attribute.push(a);
                }
            }
        }
    }
}

/// The command for case `i`, on `model`, writing under `out`.
fn command(i: usize, model: &str, out: &Path) -> Vec<String> {
    let o = out.join("o.onnx").display().to_string();
    let mut v: Vec<String> = match i % 8 {
        0..=3 => vec!["quantize", model, "-o", &o, "--calib", "random:1"],
        4 => vec!["optimize", model, "-o", &o],
        5 => vec!["calibrate", model, "--calib", "random:1", "-o", &o],
        6 => vec!["check", model, "--reference", model, "--data", "random:1"],
        _ => {
            if i % 16 == 7 {
                vec!["inspect", model]
            } else {
                let d = out.join("run").display().to_string();
                return ["run", model, "--data", "random:1", "-o", &d]
                    .iter()
                    .chain(DIMS)
                    .map(|s| s.to_string())
                    .collect();
            }
        }
    }
    .into_iter()
    .map(str::to_string)
    .collect();
    if matches!(v[0].as_str(), "quantize" | "calibrate" | "check") {
        v.extend(DIMS.iter().map(|s| s.to_string()));
    }
    v
}

/// What was wrong with a run, if anything.
fn verdict(b: &Bounded, limit: Duration) -> Option<String> {
    if b.timed_out {
        return Some(format!("hang: still running after {} s", limit.as_secs()));
    }
    if let Some(sig) = b.signal {
        return Some(format!("signal {sig}"));
    }
    // "tract panicked while …" is a caught panic turned into an error (see
    // `onnxq::tract::guarded`); "panicked at" is one that escaped.
    if !matches!(b.code, Some(0 | 1 | 3)) || b.stderr.contains("panicked at") {
        let last = b
            .stderr
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        return Some(format!("exit {:?}: {last}", b.code));
    }
    if b.max_rss_kib >= 4 << 20 {
        return Some(format!("peak RSS {} KiB", b.max_rss_kib));
    }
    None
}

/// A worker's folder: the case model, and the seeds' external data beside
/// it under the name the external seed refers to.
fn workdir() -> tempfile::TempDir {
    let d = tempdir();
    std::fs::copy(
        testdata("external/model.onnx.data"),
        d.path().join("model.onnx.data"),
    )
    .unwrap();
    std::fs::create_dir(d.path().join("out")).unwrap();
    d
}

fn clear(out: &Path) {
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::create_dir(out);
}

#[test]
fn mutated_models_never_crash_or_hang() {
    let cases = env_num("ONNXQ_FUZZ_CASES", 1200) as usize;
    let seed = env_num("ONNXQ_FUZZ_SEED", 1);
    let limit = Duration::from_secs(env_num("ONNXQ_FUZZ_TIMEOUT", 30));
    let seeds: Vec<(String, Vec<u8>)> = SEEDS
        .iter()
        .map(|s| (s.to_string(), std::fs::read(testdata(s)).unwrap()))
        .collect();
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exits: Mutex<[usize; 3]> = Mutex::new([0; 3]);
    let caught: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let found_dir = root().join("target").join("fuzz-found");
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let dir = workdir();
                let model = dir.path().join("case.onnx");
                let out = dir.path().join("out");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cases {
                        break;
                    }
                    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i as u64);
                    let (name, bytes) = &seeds[rng.below(seeds.len())];
                    let bytes = match (rng.below(2), ModelProto::decode(bytes.as_slice())) {
                        (0, Ok(mut m)) => {
                            mutate_model(&mut rng, &mut m);
                            m.encode_to_vec()
                        }
                        _ => mutate_bytes(&mut rng, bytes.clone()),
                    };
                    std::fs::write(&model, &bytes).unwrap();
                    let args = command(i, model.to_str().unwrap(), &out);
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let b = onnxq_bounded(&refs, dir.path(), limit);
                    clear(&out);
                    if let Some(code) = b.code.filter(|c| [0, 1, 3].contains(c)) {
                        let k = [0, 1, 3].iter().position(|&c| c == code).unwrap_or(1);
                        exits.lock().unwrap()[k] += 1;
                    }
                    if let Some(line) = b.stderr.lines().find(|l| l.contains("tract panicked")) {
                        caught
                            .lock()
                            .unwrap()
                            .push(format!("case {i} ({name}): {line}"));
                    }
                    if let Some(why) = verdict(&b, limit) {
                        let stem = name.replace('/', "_").replace(".onnx", "");
                        let keep: PathBuf = found_dir.join(format!("{stem}-s{seed}-c{i}.onnx"));
                        let _ = std::fs::create_dir_all(&found_dir);
                        let _ = std::fs::write(&keep, &bytes);
                        found.lock().unwrap().push(format!(
                            "case {i} ({name}, {}): {why}; kept as {}",
                            args[0],
                            keep.display()
                        ));
                    }
                }
            });
        }
    });
    let found = found.into_inner().unwrap();
    let [ok, err, gate] = exits.into_inner().unwrap();
    let caught = caught.into_inner().unwrap();
    eprintln!(
        "fuzz: {cases} cases (seed {seed}): {ok} exit 0, {err} exit 1 ({} of them a caught tract panic), {gate} exit 3, {} failures",
        caught.len(),
        found.len()
    );
    for line in caught.iter().take(20) {
        eprintln!("  caught: {line}");
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = testdata("bad/fuzz");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let limit = Duration::from_secs(30);
    let work = workdir();
    let out = work.path().join("out");
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "onnx") {
            continue;
        }
        let model = work.path().join("case.onnx");
        std::fs::copy(&path, &model).unwrap();
        for i in 0..8 {
            let args = command(i, model.to_str().unwrap(), &out);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let b = onnxq_bounded(&refs, work.path(), limit);
            clear(&out);
            assert_eq!(verdict(&b, limit), None, "{} {}", args[0], path.display());
        }
        n += 1;
    }
    assert!(n > 0, "testdata/bad/fuzz holds no case");
}

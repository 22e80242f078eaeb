//! Every malformed input: exit code 1, one line naming the culprit, nothing
//! written.

use crate::common::*;

/// (file under testdata/bad, words the error must contain)
const CASES: &[(&str, &[&str])] = &[
    (
        "truncated.onnx",
        &["truncated.onnx", "not a valid ONNX protobuf"],
    ),
    (
        "not_onnx.onnx",
        &["not_onnx.onnx", "not a valid ONNX protobuf"],
    ),
    (
        "raw_data_length.onnx",
        &["tensor 'w'", "raw_data has 5 bytes", "needs 8"],
    ),
    ("huge_dims.onnx", &["tensor 'w'", "overflows"]),
    ("cycle.onnx", &["cycle", "node 'add_"]),
    ("undefined_input.onnx", &["node 'add_ghost'", "'ghost'"]),
    (
        "external_escape/model.onnx",
        &["tensor 'w'", "'../outside.bin'", ".."],
    ),
    (
        "external_absolute/model.onnx",
        &["tensor 'w'", "'/etc/passwd'", "absolute"],
    ),
    (
        "external_symlink/model.onnx",
        &["tensor 'w'", "'link.bin'", "outside the model's folder"],
    ),
    (
        "external_past_end/model.onnx",
        &["tensor 'w'", "'weights.bin'", "past the end"],
    ),
];

#[test]
fn malformed_files_fail_cleanly() {
    for (file, words) in CASES {
        let path = testdata(&format!("bad/{file}"));
        for cmd in ["inspect", "convert"] {
            let dir = tempdir();
            let out = dir.path().join("out.onnx");
            let mut args = vec![cmd, path.to_str().unwrap()];
            if cmd == "convert" {
                args.extend(["-o", out.to_str().unwrap()]);
            }
            let o = onnxq(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd} {file}: {err}");
            assert_eq!(
                err.trim_end().lines().count(),
                1,
                "{cmd} {file}: one line: {err}"
            );
            assert!(err.starts_with("error: "), "{cmd} {file}: {err}");
            assert!(!err.contains("panicked"), "{cmd} {file}: {err}");
            for w in *words {
                assert!(err.contains(w), "{cmd} {file}: expected '{w}' in: {err}");
            }
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{cmd} {file}: wrote {left:?}");
        }
    }
}

#[test]
fn missing_file_names_the_path() {
    let o = onnxq(&["inspect", "no/such/model.onnx"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no/such/model.onnx"), "{}", stderr(&o));
}

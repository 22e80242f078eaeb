//! Calibration from image files (`--preprocess`): the digits CNN from PNG
//! files of its calibration images, list files, and every way a spec or a
//! file can fail to fit the model; from sentences (`--tokenizer`): the text
//! encoders of testdata/text.

use crate::common::*;
use onnxq::calibrate::samples::read_npz;
use std::path::{Path, PathBuf};

/// The 32 calibration images of testdata/digits/cnn_calib as 8-bit PNGs
/// (pixel = round(255·x), x in [0, 1]).
fn digit_pngs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(testdata("digits/cnn_calib"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let t = read_npz(f).unwrap().remove("image").unwrap();
            let px: Vec<u8> = t
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|x| (x * 255.0).round() as u8)
                .collect();
            let img = image::GrayImage::from_raw(8, 8, px).unwrap();
            let out = dir.join(f.file_stem().unwrap()).with_extension("png");
            img.save(&out).unwrap();
            out
        })
        .collect()
}

fn quantize(model: &str, calib: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = testdata(model);
    let mut args = vec![
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--calib",
        calib.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    onnxq(&args)
}

#[test]
fn a_folder_of_pngs_calibrates_the_digits_cnn_as_its_npz_samples_do() {
    let dir = tempdir();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    digit_pngs(&imgs);
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
    let o = quantize(
        "digits/cnn.onnx",
        &imgs,
        &out,
        &["--preprocess", "gray", "--report", report.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&report);
    assert_eq!(r["calibration"]["samples"], 32);
    let sqnr = r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap();
    // The .npz samples give 44.7 dB; the PNGs differ from them by < 1/510.
    assert!(sqnr > 40.0, "{sqnr}");
    // Calibrate alone: ranges within a PNG step of the .npz samples'.
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let cnn = testdata("digits/cnn.onnx");
    for (calib, t, pre) in [
        (imgs.to_str().unwrap(), &a, Some("gray")),
        (testdata("digits/cnn_calib").to_str().unwrap(), &b, None),
    ] {
        let mut args = vec!["calibrate", cnn.to_str().unwrap(), "--calib", calib];
        args.extend(["-o", t.to_str().unwrap()]);
        if let Some(p) = pre {
            args.extend(["--preprocess", p]);
        }
        let o = onnxq(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (ta, tb) = (json(&a), json(&b));
    let image_range = |t: &serde_json::Value| t["tensors"]["image"]["max"].as_f64().unwrap();
    assert!((image_range(&ta) - image_range(&tb)).abs() < 2.0 / 255.0);
}

#[test]
fn a_list_file_names_images_relative_to_itself() {
    let dir = tempdir();
    let files = digit_pngs(dir.path());
    let list = dir.path().join("calib.txt");
    let mut text = String::from("# the first ten\n\n");
    for f in &files[..10] {
        text += &format!("{}\n", f.file_name().unwrap().to_str().unwrap());
    }
    std::fs::write(&list, text).unwrap();
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
    let o = quantize(
        "digits/cnn.onnx",
        &list,
        &out,
        &[
            "--preprocess",
            "gray,resize=8x8,scale=1/255",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&report)["calibration"]["samples"], 10);
}

#[test]
fn specs_and_images_that_do_not_fit_the_model_are_named_and_nothing_is_written() {
    let dir = tempdir();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    digit_pngs(&imgs);
    let out = dir.path().join("q.onnx");
    let cases: &[(&[&str], &str)] = &[
        (&[], "holds images and no .npz samples: give --preprocess"),
        (&["--preprocess", "rgb"], "the spec gives 3 channel(s)"),
        (
            &["--preprocess", "gray,resize=9x9"],
            "the spec resizes to 9x9",
        ),
        (&["--preprocess", "gray,layout=nhwc"], "channel"),
        (&["--preprocess", "gray,mean=0.1,0.2"], "mean has 2 values"),
        (&["--preprocess", "gray,std=0"], "std must not be 0"),
        (&["--preprocess", "gray,resize=0x8"], "resize: expected WxH"),
        (&["--preprocess", "gray,sharpen"], "unknown item 'sharpen'"),
        (
            &["--preprocess", "gray,input=pixels"],
            "the model's input is 'image'",
        ),
    ];
    for (extra, want) in cases {
        let o = quantize("digits/cnn.onnx", &imgs, &out, extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
    // A file that is no image, among good ones: named, exit 1.
    std::fs::write(imgs.join("0005.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = quantize("digits/cnn.onnx", &imgs, &out, &["--preprocess", "gray"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("0005.png"), "{}", stderr(&o));
    assert!(!out.exists());
    // A model with several inputs: images cannot give them all.
    let o = quantize(
        "quirks/opset11_ops.onnx",
        &imgs,
        &out,
        &["--preprocess", "gray"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("images give one input"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sentences_and_a_tokenizer_calibrate_a_token_model_and_misfits_are_named() {
    let dir = tempdir();
    let (out, report) = (dir.path().join("q.onnx"), dir.path().join("r.json"));
    let sentences = testdata("text/sentences.txt");
    let tok = testdata("text/tokenizer.json");
    let tok = tok.to_str().unwrap();
    for model in ["text/encoder.onnx", "text/encoder_seq16.onnx"] {
        let o = quantize(
            model,
            &sentences,
            &out,
            &["--tokenizer", tok, "--report", report.to_str().unwrap()],
        );
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        let r = json(&report);
        assert_eq!(r["calibration"]["samples"], 32);
        assert!(r["parity"]["outputs"][0]["sqnr_db"].as_f64().unwrap() > 25.0);
        std::fs::remove_file(&out).unwrap();
    }
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "text/encoder.onnx",
            &[],
            "a text file, no .npz samples: give --tokenizer",
        ),
        (
            "text/encoder_seq16.onnx",
            &["--tokenizer", tok, "--max-length", "8"],
            "fixed at 16",
        ),
        (
            "digits/cnn.onnx",
            &["--tokenizer", tok],
            "input 'image': not one a tokenizer gives",
        ),
        (
            "text/encoder.onnx",
            &["--tokenizer", "testdata/text/sentences.txt"],
            "not a Hugging Face tokenizer.json",
        ),
        (
            "text/encoder.onnx",
            &["--tokenizer", tok, "--preprocess", "rgb"],
            "cannot be used with",
        ),
    ];
    for (model, extra, want) in cases {
        let o = quantize(model, &sentences, &out, extra);
        assert!(
            matches!(o.status.code(), Some(1 | 2)),
            "{extra:?}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
}

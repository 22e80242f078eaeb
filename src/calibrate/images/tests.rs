use super::*;
use image::Rgb;

fn input(dims: &[Option<usize>], dtype: DataType) -> Vec<InputSpec> {
    vec![InputSpec {
        name: "x".into(),
        dtype: Some(dtype),
        dims: Some(
            dims.iter()
                .map(|d| match d {
                    Some(n) => Dim::Fixed(*n),
                    None => Dim::Symbolic("s".into()),
                })
                .collect(),
        ),
    }]
}

/// A source over no files, for `tensor` (open needs files).
fn source(prep: &str, dims: &[Option<usize>], dtype: DataType) -> ImageSource {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::new(2, 2).save(dir.path().join("a.png")).unwrap();
    ImageSource::open(
        dir.path(),
        &Preprocess::parse(prep).unwrap(),
        &input(dims, dtype),
    )
    .unwrap()
}

#[test]
fn the_issues_example_parses() {
    let p = Preprocess::parse(
        "resize=320x320,crop=center,rgb,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nchw",
    )
    .unwrap();
    assert_eq!(p.resize, Some((320, 320)));
    assert_eq!(p.fit, Fit::CenterCrop);
    assert_eq!(p.mean, [0.485, 0.456, 0.406]);
    assert_eq!(p.std, [0.229, 0.224, 0.225]);
    assert_eq!(p.layout, Layout::Nchw);
    assert!((p.scale - 1.0 / 255.0).abs() < 1e-9);
    let q = Preprocess::parse("resize=64,letterbox,pad=0,bgr,scale=1,layout=nhwc").unwrap();
    assert_eq!(
        (q.resize, q.fit, q.pad, q.channels),
        (Some((64, 64)), Fit::Letterbox, 0, Channels::Bgr)
    );
    assert_eq!(q.scale, 1.0);
    for bad in [
        "0.5",
        "resize=3x",
        "mean=a",
        "scale=1/0",
        "rgb,mean=1,2",
        "pad=300",
        "fit=zoom",
    ] {
        assert!(Preprocess::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn normalization_and_layouts_put_each_channel_where_it_belongs() {
    // One 1×2 image: a red pixel, then a blue one.
    let mut img = RgbImage::new(2, 1);
    img.put_pixel(0, 0, Rgb([255, 0, 0]));
    img.put_pixel(1, 0, Rgb([0, 0, 255]));
    let img = DynamicImage::ImageRgb8(img);
    let s = source(
        "resize=2x1,mean=0.5,std=0.5",
        &[Some(1), Some(3), None, None],
        DataType::Float,
    );
    let t = s.tensor(img.clone()).unwrap();
    assert_eq!(t.dims(), [1, 3, 1, 2]);
    // NCHW: R plane, G plane, B plane; (x/255 - 0.5) / 0.5.
    assert_eq!(t.to_f32_vec().unwrap(), [1.0, -1.0, -1.0, -1.0, -1.0, 1.0]);
    let s = source(
        "resize=2x1,bgr,scale=1,layout=nhwc",
        &[None, None, None, Some(3)],
        DataType::Float,
    );
    let t = s.tensor(img.clone()).unwrap();
    assert_eq!(t.dims(), [1, 1, 2, 3]);
    // NHWC, B G R per pixel, 0–255.
    assert_eq!(t.to_f32_vec().unwrap(), [0.0, 0.0, 255.0, 255.0, 0.0, 0.0]);
    let s = source(
        "resize=2x1",
        &[Some(1), Some(3), Some(1), Some(2)],
        DataType::Uint8,
    );
    let t = s.tensor(img).unwrap();
    assert_eq!(t.dtype(), DataType::Uint8);
    assert_eq!(t.dims(), [1, 3, 1, 2]);
}

#[test]
fn center_crop_keeps_the_middle_and_letterbox_pads_around_it() {
    // 4×2: left half black, right half white.
    let mut img = RgbImage::new(4, 2);
    for y in 0..2 {
        for x in 2..4 {
            img.put_pixel(x, y, Rgb([255; 3]));
        }
    }
    let crop = fit(img.clone(), 2, 2, Fit::CenterCrop, 0);
    assert_eq!(crop.dimensions(), (2, 2));
    assert_eq!(crop.get_pixel(0, 0).0, [0; 3]);
    assert_eq!(crop.get_pixel(1, 0).0, [255; 3]);
    let boxed = fit(img.clone(), 4, 4, Fit::Letterbox, 114);
    assert_eq!(boxed.dimensions(), (4, 4));
    assert_eq!(boxed.get_pixel(0, 0).0, [114; 3]);
    assert_eq!(boxed.get_pixel(0, 3).0, [114; 3]);
    assert_eq!(boxed.get_pixel(0, 1).0, [0; 3]);
    assert_eq!(boxed.get_pixel(3, 2).0, [255; 3]);
    let stretched = fit(img, 2, 4, Fit::Stretch, 0);
    assert_eq!(stretched.dimensions(), (2, 4));
}

#[test]
fn the_input_decides_what_a_spec_must_say() {
    let dir = tempfile::tempdir().unwrap();
    RgbImage::new(2, 2).save(dir.path().join("a.png")).unwrap();
    let open = |prep: &str, dims: &[Option<usize>], dtype| {
        ImageSource::open(
            dir.path(),
            &Preprocess::parse(prep).unwrap(),
            &input(dims, dtype),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    assert!(open("rgb", &[None, Some(3), None, None], DataType::Float).contains("give resize=WxH"));
    assert!(open(
        "rgb",
        &[Some(4), Some(3), Some(8), Some(8)],
        DataType::Float
    )
    .contains("batch 1"));
    assert!(open("rgb", &[None, Some(3), Some(8)], DataType::Float).contains("rank 3"));
    assert!(open("rgb", &[None, Some(3), Some(8), Some(8)], DataType::Int64).contains("int64"));
    assert!(open(
        "rgb,mean=0.5",
        &[None, Some(3), Some(8), Some(8)],
        DataType::Uint8
    )
    .contains("without mean or std"));
    assert!(open("rgb", &[None, Some(3), Some(8), Some(8)], DataType::Float).is_empty());
}

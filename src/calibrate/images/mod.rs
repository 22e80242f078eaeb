//! Samples from image files: a folder of images (or a text file listing
//! them) decoded with the `image` crate and turned into the model's image
//! input by a preprocessing spec, one image a sample, read when a sample is
//! loaded (memory bounded by one image per worker).
//!
//! The spec, comma-separated (numbers after `mean=`/`std=` continue the
//! list): `resize=WxH` (or `resize=N`: N×N; default: the input's static
//! height and width), `crop=center` (scale to cover W×H, keep the aspect
//! ratio, cut the middle) or `letterbox` (scale to fit, pad with `pad=V`,
//! default 114, as YOLO exports expect) or neither (stretch); `rgb`
//! (default), `bgr` or `gray`; `scale=F` (default 1/255: pixels in [0, 1];
//! `scale=1` keeps 0–255); `mean=…` and `std=…` (one value or one a
//! channel: `(pixel·scale − mean) / std`); `layout=nchw` (default) or
//! `nhwc`; `input=NAME` to say which input it is for (checked). A `uint8` input
//! takes the pixels as they are (no scale, mean or std).
//!
//! Example: `resize=224x224,crop=center,rgb,mean=0.485,0.456,0.406,std=0.229,0.224,0.225`.

use super::samples::{Sample, SampleSource};
use crate::error::{Error, Result};
use crate::ir::types::{Dim, InputSpec};
use crate::ir::{DataType, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use std::path::{Path, PathBuf};

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff", "pgm", "ppm", "pnm",
];

/// How an image becomes a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Width × height to resize to; `None`: the input's static size.
    pub resize: Option<(u32, u32)>,
    pub fit: Fit,
    pub channels: Channels,
    /// Letterbox padding value (0–255).
    pub pad: u8,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub layout: Layout,
    /// The model input the images feed (`None`: its only input).
    pub input: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fit {
    Stretch,
    CenterCrop,
    Letterbox,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Channels {
    Rgb,
    Bgr,
    Gray,
}

impl Channels {
    fn count(self) -> usize {
        if self == Channels::Gray {
            1
        } else {
            3
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            resize: None,
            fit: Fit::Stretch,
            channels: Channels::Rgb,
            pad: 114,
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            layout: Layout::Nchw,
            input: None,
        }
    }
}

fn spec_err(spec: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("preprocessing spec '{spec}': {why}"))
}

fn number(spec: &str, key: &str, v: &str) -> Result<f32> {
    let parsed = match v.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f32>()
            .ok()
            .zip(b.trim().parse::<f32>().ok())
            .map(|(a, b)| a / b),
        None => v.trim().parse::<f32>().ok(),
    };
    parsed
        .filter(|x| x.is_finite())
        .ok_or_else(|| spec_err(spec, format!("{key}: '{v}' is not a number")))
}

impl Preprocess {
    /// Parses a spec (see the module doc).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut p = Preprocess::default();
        let (mut mean, mut std) = (None::<Vec<f32>>, None::<Vec<f32>>);
        // The list a bare number continues (mean or std).
        let mut list: Option<&str> = None;
        for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (token, None),
            };
            if value.is_none() && number(spec, "", key).is_ok() {
                let Some(l) = list else {
                    return Err(spec_err(spec, format!("'{key}': a number with no key")));
                };
                let target = if l == "mean" { &mut mean } else { &mut std };
                target
                    .get_or_insert_with(Vec::new)
                    .push(number(spec, l, key)?);
                continue;
            }
            list = None;
            match (key, value) {
                ("resize", Some(v)) => {
                    let (w, h) = match v.split_once(['x', 'X']) {
                        Some((w, h)) => (w, h),
                        None => (v, v),
                    };
                    let dim = |s: &str| {
                        s.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|&n| (1..=16384).contains(&n))
                    };
                    let (Some(w), Some(h)) = (dim(w), dim(h)) else {
                        return Err(spec_err(
                            spec,
                            format!("resize: expected WxH (1 to 16384 each), got '{v}'"),
                        ));
                    };
                    p.resize = Some((w, h));
                }
                ("crop", Some("center")) => p.fit = Fit::CenterCrop,
                ("crop", Some("none")) | ("stretch", None) => p.fit = Fit::Stretch,
                ("letterbox", None) => p.fit = Fit::Letterbox,
                ("fit", Some(v)) => {
                    p.fit = match v {
                        "stretch" => Fit::Stretch,
                        "crop" | "center" => Fit::CenterCrop,
                        "letterbox" => Fit::Letterbox,
                        _ => {
                            return Err(spec_err(
                                spec,
                                format!("fit: expected stretch, crop or letterbox, got '{v}'"),
                            ))
                        }
                    }
                }
                ("rgb", None) => p.channels = Channels::Rgb,
                ("bgr", None) => p.channels = Channels::Bgr,
                ("gray" | "grey", None) => p.channels = Channels::Gray,
                ("pad", Some(v)) => {
                    p.pad = v.parse().map_err(|_| {
                        spec_err(spec, format!("pad: expected 0 to 255, got '{v}'"))
                    })?
                }
                ("scale", Some(v)) => p.scale = number(spec, "scale", v)?,
                ("mean" | "std", Some(v)) => {
                    let first = number(spec, key, v)?;
                    if key == "mean" {
                        mean = Some(vec![first]);
                    } else {
                        std = Some(vec![first]);
                    }
                    list = Some(key);
                }
                ("layout", Some("nchw")) => p.layout = Layout::Nchw,
                ("layout", Some("nhwc")) => p.layout = Layout::Nhwc,
                ("input", Some(v)) if !v.is_empty() => p.input = Some(v.to_string()),
                _ => {
                    return Err(spec_err(
                        spec,
                        format!(
                            "unknown item '{token}' (known: resize=WxH, crop=center, letterbox, \
                             pad=V, rgb, bgr, gray, scale=F, mean=…, std=…, layout=nchw|nhwc, input=NAME)"
                        ),
                    ))
                }
            }
        }
        if let Some(m) = mean {
            p.mean = m;
        }
        if let Some(s) = std {
            p.std = s;
        }
        let c = p.channels.count();
        for (what, v) in [("mean", &p.mean), ("std", &p.std)] {
            if v.len() != 1 && v.len() != c {
                return Err(spec_err(
                    spec,
                    format!(
                        "{what} has {} values, expected 1 or {c} (one per channel)",
                        v.len()
                    ),
                ));
            }
        }
        if p.std.contains(&0.0) {
            return Err(spec_err(spec, "std must not be 0"));
        }
        Ok(p)
    }
}

/// Image files of a folder (sorted by name), or the files a list file
/// names (one a line, relative to the list's folder; `#` comments).
pub fn image_files(path: &Path) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no image files ({})",
                path.display(),
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        return Ok(files);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let files: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| base.join(l))
        .collect();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the list names no image files",
            path.display()
        )));
    }
    Ok(files)
}

/// Whether a `--calib` folder holds images (and no `.npz` samples).
pub fn holds_images(path: &Path) -> bool {
    image_files(path).is_ok_and(|_| path.is_dir())
}

/// Images as samples of one model input.
pub struct ImageSource {
    files: Vec<PathBuf>,
    prep: Preprocess,
    input: String,
    dtype: DataType,
    /// Width, height.
    size: (u32, u32),
}

impl ImageSource {
    /// The images at `path` (a folder or a list file) for the model with
    /// `inputs`, preprocessed by `prep`; checks that the spec fits the
    /// input (rank 4, channels, static height and width, type).
    pub fn open(path: &Path, prep: &Preprocess, inputs: &[InputSpec]) -> Result<Self> {
        let files = image_files(path)?;
        let spec = match inputs {
            [one] => one,
            _ => {
                return Err(Error::Invalid(format!(
                "images give one input and the model has {} ({}): calibrate it from .npz samples",
                inputs.len(),
                names(inputs)
            )))
            }
        };
        if let Some(name) = prep.input.as_ref().filter(|n| **n != spec.name) {
            return Err(Error::Invalid(format!(
                "preprocessing input={name}: the model's input is '{}'",
                spec.name
            )));
        }
        let fits = |why: String| Error::Invalid(format!("input '{}': {why}", spec.name));
        let dtype = spec.dtype.unwrap_or(DataType::Float);
        if !matches!(dtype, DataType::Float | DataType::Uint8) {
            return Err(fits(format!(
                "is {}; images give float32 or uint8",
                dtype.name()
            )));
        }
        if dtype == DataType::Uint8 && (prep.mean != [0.0] || prep.std != [1.0]) {
            return Err(fits(
                "is uint8: it takes the pixels as they are, without mean or std".into(),
            ));
        }
        let dims = spec.dims.clone().unwrap_or_else(|| {
            vec![
                Dim::Symbolic("N".into()),
                Dim::Symbolic("C".into()),
                Dim::Symbolic("H".into()),
                Dim::Symbolic("W".into()),
            ]
        });
        if dims.len() != 4 {
            return Err(fits(format!(
                "has rank {}; images give rank 4 ([N, C, H, W] or [N, H, W, C])",
                dims.len()
            )));
        }
        let fixed = |d: &Dim| match d {
            Dim::Fixed(n) => Some(*n),
            _ => None,
        };
        let (c, h, w) = match prep.layout {
            Layout::Nchw => (&dims[1], &dims[2], &dims[3]),
            Layout::Nhwc => (&dims[3], &dims[1], &dims[2]),
        };
        let shape = || {
            let s: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("[{}]", s.join(", "))
        };
        if let Some(n) = fixed(&dims[0]).filter(|&n| n != 1) {
            return Err(fits(format!(
                "takes {} {n} images at once; images give one a sample (batch 1)",
                shape()
            )));
        }
        if let Some(c) = fixed(c).filter(|&c| c != prep.channels.count()) {
            return Err(fits(format!(
                "takes {} ({c} channel(s), layout {}), the spec gives {} channel(s) ({:?}); \
                 use {}",
                shape(),
                if prep.layout == Layout::Nchw {
                    "nchw"
                } else {
                    "nhwc"
                },
                prep.channels.count(),
                prep.channels,
                if c == 1 {
                    "gray"
                } else {
                    "rgb or bgr, or the other layout"
                }
            )));
        }
        let size = match (prep.resize, fixed(w), fixed(h)) {
            (Some((rw, rh)), Some(w), Some(h)) if (rw as usize, rh as usize) != (w, h) => {
                return Err(fits(format!(
                    "takes {} (width {w}, height {h}); the spec resizes to {rw}x{rh}",
                    shape()
                )))
            }
            (Some(r), _, _) => r,
            (None, Some(w), Some(h)) => (w as u32, h as u32),
            (None, _, _) => {
                return Err(fits(format!(
                "takes {} (height and width not fixed): give resize=WxH in the preprocessing spec",
                shape()
            )))
            }
        };
        Ok(ImageSource {
            files,
            prep: prep.clone(),
            input: spec.name.clone(),
            dtype,
            size,
        })
    }

    /// The tensor of one decoded image.
    pub fn tensor(&self, img: DynamicImage) -> Result<Tensor> {
        let (w, h) = self.size;
        let rgb = fit(img.to_rgb8(), w, h, self.prep.fit, self.prep.pad);
        let c = self.prep.channels.count();
        let (wu, hu) = (w as usize, h as usize);
        // Channel k of pixel (x, y), 0–255.
        let px = |x: usize, y: usize, k: usize| -> f32 {
            let p = rgb.get_pixel(x as u32, y as u32).0;
            match self.prep.channels {
                Channels::Rgb => p[k] as f32,
                Channels::Bgr => p[2 - k] as f32,
                // ITU-R BT.601 luma, as `image`'s to_luma8 weighs it.
                Channels::Gray => 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32,
            }
        };
        let index = |x: usize, y: usize, k: usize| match self.prep.layout {
            Layout::Nchw => (k * hu + y) * wu + x,
            Layout::Nhwc => (y * wu + x) * c + k,
        };
        let dims = match self.prep.layout {
            Layout::Nchw => vec![1, c, hu, wu],
            Layout::Nhwc => vec![1, hu, wu, c],
        };
        let n = c * hu * wu;
        if self.dtype == DataType::Uint8 {
            let mut out = vec![0u8; n];
            for y in 0..hu {
                for x in 0..wu {
                    for k in 0..c {
                        out[index(x, y, k)] = px(x, y, k).round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
            return Tensor::from_raw(DataType::Uint8, dims, out.into());
        }
        let pick = |v: &[f32], k: usize| if v.len() == 1 { v[0] } else { v[k] };
        let mut out = vec![0f32; n];
        for y in 0..hu {
            for x in 0..wu {
                for k in 0..c {
                    out[index(x, y, k)] = (px(x, y, k) * self.prep.scale
                        - pick(&self.prep.mean, k))
                        / pick(&self.prep.std, k);
                }
            }
        }
        Ok(Tensor::from_f32(dims, &out))
    }
}

fn names(inputs: &[InputSpec]) -> String {
    inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `img` brought to `w`×`h` (bilinear) by `fit`.
fn fit(img: RgbImage, w: u32, h: u32, fit: Fit, pad: u8) -> RgbImage {
    let (iw, ih) = img.dimensions();
    if (iw, ih) == (w, h) {
        return img;
    }
    match fit {
        Fit::Stretch => image::imageops::resize(&img, w, h, FilterType::Triangle),
        Fit::CenterCrop => {
            let s = (w as f64 / iw as f64).max(h as f64 / ih as f64);
            let (sw, sh) = (
                ((iw as f64 * s).round() as u32).max(w),
                ((ih as f64 * s).round() as u32).max(h),
            );
            let scaled = image::imageops::resize(&img, sw, sh, FilterType::Triangle);
            image::imageops::crop_imm(&scaled, (sw - w) / 2, (sh - h) / 2, w, h).to_image()
        }
        Fit::Letterbox => {
            let s = (w as f64 / iw as f64).min(h as f64 / ih as f64);
            let (sw, sh) = (
                ((iw as f64 * s).round() as u32).clamp(1, w),
                ((ih as f64 * s).round() as u32).clamp(1, h),
            );
            let scaled = image::imageops::resize(&img, sw, sh, FilterType::Triangle);
            let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([pad; 3]));
            image::imageops::replace(
                &mut canvas,
                &scaled,
                ((w - sw) / 2) as i64,
                ((h - sh) / 2) as i64,
            );
            canvas
        }
    }
}

impl SampleSource for ImageSource {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn name(&self, i: usize) -> String {
        self.files
            .get(i)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
    fn load(&self, i: usize) -> Result<Sample> {
        let path = self
            .files
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("no image {i} of {}", self.files.len())))?;
        let reader = image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?;
        let img = reader.decode().map_err(|e| {
            Error::Invalid(format!("{}: not a readable image: {e}", path.display()))
        })?;
        Ok(vec![(self.input.clone(), self.tensor(img)?)])
    }
    fn describe(&self) -> String {
        format!("images:{}:{:?}", self.files.len(), self.prep)
    }
}

#[cfg(test)]
mod tests;

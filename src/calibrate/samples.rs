//! Where calibration (and validation) samples come from.
//!
//! Every source gives the same thing: a count, a name per sample, and, on
//! demand, the sample's named input tensors. Samples are loaded one at a
//! time by the worker that runs them, so memory does not grow with the
//! number of samples (a stacked `.npz` is the exception: it is one file).
//!
//! - a directory of `.npz` files, one sample per file, arrays named after the
//!   model inputs;
//! - a directory of ONNX backend-test folders (`test_data_set_*/input_N.pb`),
//!   matched to inputs by the name the tensor carries, else by position;
//! - one `.npz` whose arrays carry a leading sample axis;
//! - `random:N[:seed]`, synthetic samples shaped from the model's inputs.
//!
//! [`check_sample`] compares a sample with the model's inputs and names the
//! sample and input at fault.

pub use super::npz::{read_npz, read_npz_checked, write_npz, ArrayCheck, NamedArrayCheck};
use crate::error::{Error, Result};
use crate::ir::tensor::{numel, DataType, Tensor};
use crate::ir::types::{Dim, InputSpec};
use crate::onnx::proto::TensorProto;
use crate::onnx::tensor::tensor_from_proto;
use prost::bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One sample: input name → tensor.
pub type Sample = Vec<(String, Tensor)>;

/// A source of samples.
pub trait SampleSource: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A short name for sample `i` (file name, `test_data_set_3`, `random/7`).
    fn name(&self, i: usize) -> String;
    /// Loads sample `i`.
    fn load(&self, i: usize) -> Result<Sample>;
    /// Bytes that identify the source's content for fingerprints (defaults
    /// to hashing every sample).
    fn describe(&self) -> String;
}

fn sample_err(sample: &str, reason: impl Into<String>) -> Error {
    Error::Invalid(format!("sample '{sample}': {}", reason.into()))
}

// ----- sources ----------------------------------------------------------------

/// A directory of `.npz` files, one sample each, in file-name order.
pub struct NpzDir {
    files: Vec<PathBuf>,
    inputs: Vec<InputSpec>,
}

impl NpzDir {
    /// The `.npz` files of `dir`; each is checked against `inputs` before
    /// its payload is read.
    pub fn open(dir: &Path, inputs: &[InputSpec]) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "npz"))
            .collect();
        files.sort();
        Ok(NpzDir {
            files,
            inputs: inputs.to_vec(),
        })
    }
}

impl SampleSource for NpzDir {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn name(&self, i: usize) -> String {
        self.files[i]
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    }
    fn load(&self, i: usize) -> Result<Sample> {
        let check = fits_inputs(&self.inputs, false);
        Ok(read_npz_checked(&self.files[i], &check)?
            .into_iter()
            .collect())
    }
    fn describe(&self) -> String {
        format!("npz-dir:{}", self.files.len())
    }
}

/// ONNX backend-test folders: `test_data_set_*/input_N.pb`.
pub struct PbDirs {
    sets: Vec<PathBuf>,
    input_names: Vec<String>,
}

impl PbDirs {
    pub fn open(dir: &Path, inputs: &[InputSpec]) -> Result<Self> {
        let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect();
        sets.sort_by_key(|p| set_index(p));
        Ok(PbDirs {
            sets,
            input_names: inputs.iter().map(|i| i.name.clone()).collect(),
        })
    }
}

impl PbDirs {
    /// The folder of set `i`.
    pub fn set(&self, i: usize) -> &Path {
        &self.sets[i]
    }
}

fn set_index(p: &Path) -> (u64, String) {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let n = name
        .rsplit('_')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    (n, name)
}

/// Reads the numbered `{prefix}_N.pb` TensorProto files of a folder, in order.
pub fn read_pb_files(dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, TensorProto)>> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().to_string();
            let idx = stem.strip_prefix(prefix)?.strip_prefix('_')?.parse().ok()?;
            (p.extension()? == "pb").then_some((idx, p))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| {
            let bytes = crate::onnx::read_bytes(&p)?;
            let t = TensorProto::decode(bytes.as_slice()).map_err(|source| Error::Decode {
                what: p.display().to_string(),
                source,
            })?;
            Ok((p, t))
        })
        .collect()
}

impl SampleSource for PbDirs {
    fn len(&self) -> usize {
        self.sets.len()
    }
    fn name(&self, i: usize) -> String {
        set_index(&self.sets[i]).1
    }
    fn load(&self, i: usize) -> Result<Sample> {
        let files = read_pb_files(&self.sets[i], "input")?;
        let mut out = Vec::new();
        for (k, (path, t)) in files.into_iter().enumerate() {
            let name = if !t.name().is_empty() && self.input_names.iter().any(|n| n == t.name()) {
                t.name().to_string()
            } else {
                self.input_names.get(k).cloned().ok_or_else(|| {
                    sample_err(
                        &self.name(i),
                        format!("{} has no matching model input", path.display()),
                    )
                })?
            };
            let tensor =
                tensor_from_proto(&t).map_err(|e| sample_err(&self.name(i), e.to_string()))?;
            out.push((name, tensor));
        }
        Ok(out)
    }
    fn describe(&self) -> String {
        format!("pb-dirs:{}", self.sets.len())
    }
}

/// One `.npz` whose arrays carry a leading sample axis.
pub struct NpzStack {
    arrays: Vec<(String, Tensor)>,
    count: usize,
    file: String,
}

impl NpzStack {
    /// The arrays of `path`, each checked against `inputs` (after its
    /// leading sample axis) before its payload is read.
    pub fn open(path: &Path, inputs: &[InputSpec]) -> Result<Self> {
        let check = fits_inputs(inputs, true);
        let arrays: Vec<(String, Tensor)> = read_npz_checked(path, &check)?.into_iter().collect();
        let file = path.display().to_string();
        let count = arrays
            .first()
            .and_then(|(_, t)| t.dims().first().copied())
            .unwrap_or(0);
        for (name, t) in &arrays {
            if t.dims().first() != Some(&count) {
                return Err(Error::Invalid(format!(
                    "{file}: array '{name}' has {:?} samples along axis 0, others have {count}",
                    t.dims().first()
                )));
            }
        }
        Ok(NpzStack {
            arrays,
            count,
            file,
        })
    }
}

impl SampleSource for NpzStack {
    fn len(&self) -> usize {
        self.count
    }
    fn name(&self, i: usize) -> String {
        format!("{}[{i}]", self.file)
    }
    fn load(&self, i: usize) -> Result<Sample> {
        self.arrays
            .iter()
            .map(|(name, t)| {
                let dims = t.dims()[1..].to_vec();
                let raw = t
                    .raw()
                    .ok_or_else(|| sample_err(&self.name(i), "string arrays are not supported"))?;
                let per = raw.len() / self.count.max(1);
                let slice = raw.slice(i * per..(i + 1) * per);
                Ok((name.clone(), Tensor::from_raw(t.dtype(), dims, slice)?))
            })
            .collect()
    }
    fn describe(&self) -> String {
        format!("npz-stack:{}:{}", self.file, self.count)
    }
}

/// The first `n` samples of another source (the automatic mode ranks its
/// candidates on a few of the validation samples).
pub struct Prefix<'a> {
    pub inner: &'a dyn SampleSource,
    pub n: usize,
}

impl SampleSource for Prefix<'_> {
    fn len(&self) -> usize {
        self.n.min(self.inner.len())
    }
    fn name(&self, i: usize) -> String {
        self.inner.name(i)
    }
    fn load(&self, i: usize) -> Result<Sample> {
        if i >= self.len() {
            return Err(Error::Invalid(format!("no sample {i} of {}", self.len())));
        }
        self.inner.load(i)
    }
    fn describe(&self) -> String {
        format!("{} (first {})", self.inner.describe(), self.len())
    }
}

/// Samples already in memory (library callers, tests), named `memory/I`.
pub struct InMemory(pub Vec<Sample>);

impl SampleSource for InMemory {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn name(&self, i: usize) -> String {
        format!("memory/{i}")
    }
    fn load(&self, i: usize) -> Result<Sample> {
        self.0
            .get(i)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("no sample {i} of {}", self.0.len())))
    }
    fn describe(&self) -> String {
        format!("memory:{}", self.0.len())
    }
}

/// Synthetic samples: uniform in [-1, 1) (floats), [0, 10) (integers),
/// shaped from the model's inputs with symbolic dims resolved by `dims`.
pub struct Random {
    inputs: Vec<(String, DataType, Vec<usize>)>,
    count: usize,
    seed: u64,
}

impl Random {
    /// `spec` is `N` or `N:seed` (the part after `random:`).
    pub fn new(spec: &str, inputs: &[InputSpec], dims: &BTreeMap<String, usize>) -> Result<Self> {
        let mut parts = spec.split(':');
        let count = parts
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::Invalid(format!("random:{spec}: expected random:N or random:N:SEED"))
            })?;
        let seed = match parts.next() {
            Some(s) => s.parse::<u64>().map_err(|_| {
                Error::Invalid(format!("random:{spec}: seed '{s}' is not a number"))
            })?,
            None => 0,
        };
        let mut resolved = Vec::new();
        for i in inputs {
            let dtype = i.dtype.ok_or_else(|| {
                Error::Invalid(format!("input '{}' has no declared type", i.name))
            })?;
            let shape = i
                .dims
                .as_ref()
                .ok_or_else(|| Error::Invalid(format!("input '{}' has no declared shape", i.name)))?
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Ok(*n),
                    Dim::Symbolic(s) => dims.get(s).copied().ok_or_else(|| {
                        Error::Invalid(format!("input '{}': give the size of dimension '{s}' with --dim {s}=VALUE", i.name))
                    }),
                    Dim::Unknown => Err(Error::Invalid(format!(
                        "input '{}' has a dimension with no name or size; random samples cannot be shaped",
                        i.name
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            resolved.push((i.name.clone(), dtype, shape));
        }
        Ok(Random {
            inputs: resolved,
            count,
            seed,
        })
    }
}

/// splitmix64: a tiny deterministic generator for synthetic samples.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SampleSource for Random {
    fn len(&self) -> usize {
        self.count
    }
    fn name(&self, i: usize) -> String {
        format!("random/{i}")
    }
    fn load(&self, i: usize) -> Result<Sample> {
        let mut state = self.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
        self.inputs
            .iter()
            .map(|(name, dtype, shape)| {
                let n = numel(shape).unwrap_or(0);
                let t = match dtype {
                    DataType::Float | DataType::Float16 | DataType::Double => {
                        let v: Vec<f32> = (0..n)
                            .map(|_| {
                                (splitmix(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                            })
                            .collect();
                        let f = Tensor::from_f32(shape.clone(), &v);
                        match dtype {
                            DataType::Float16 => {
                                let raw: Vec<u8> = v
                                    .iter()
                                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                                    .collect();
                                Tensor::from_raw(
                                    DataType::Float16,
                                    shape.clone(),
                                    Bytes::from(raw),
                                )?
                            }
                            DataType::Double => {
                                let raw: Vec<u8> =
                                    v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect();
                                Tensor::from_raw(DataType::Double, shape.clone(), Bytes::from(raw))?
                            }
                            _ => f,
                        }
                    }
                    DataType::Int64 => {
                        let v: Vec<i64> =
                            (0..n).map(|_| (splitmix(&mut state) % 10) as i64).collect();
                        Tensor::from_i64(shape.clone(), &v)
                    }
                    DataType::Int32 => {
                        let v: Vec<i32> =
                            (0..n).map(|_| (splitmix(&mut state) % 10) as i32).collect();
                        Tensor::from_i32(shape.clone(), &v)
                    }
                    DataType::Uint8 => {
                        let v: Vec<u8> = (0..n).map(|_| splitmix(&mut state) as u8).collect();
                        Tensor::from_u8(shape.clone(), &v)
                    }
                    DataType::Bool => {
                        let v: Vec<u8> = (0..n).map(|_| (splitmix(&mut state) & 1) as u8).collect();
                        Tensor::from_raw(DataType::Bool, shape.clone(), Bytes::from(v))?
                    }
                    other => {
                        return Err(Error::Invalid(format!(
                            "input '{name}': random samples of type {} are not supported",
                            other.name()
                        )))
                    }
                };
                Ok((name.clone(), t))
            })
            .collect()
    }
    fn describe(&self) -> String {
        format!("random:{}:{}", self.count, self.seed)
    }
}

/// Opens `spec`: `random:N[:seed]`, a `.npz` file, or a directory of `.npz`
/// files or `test_data_set_*` folders.
pub fn open_source(
    spec: &str,
    inputs: &[InputSpec],
    dims: &BTreeMap<String, usize>,
) -> Result<Box<dyn SampleSource>> {
    if let Some(rest) = spec.strip_prefix("random:") {
        return Ok(Box::new(Random::new(rest, inputs, dims)?));
    }
    let path = Path::new(spec);
    if path.exists() && !path.is_file() && !path.is_dir() {
        // A FIFO or device: refused with the reason, never opened.
        crate::onnx::open_regular(path)?;
    }
    if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
    {
        return Err(Error::Invalid(format!(
            "{}: a text file, no .npz samples: give --tokenizer tokenizer.json (a sentence a line) or --preprocess SPEC (an image path a line)",
            path.display()
        )));
    }
    if path.is_file() {
        return Ok(Box::new(NpzStack::open(path, inputs)?));
    }
    if !path.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    let pb = PbDirs::open(path, inputs)?;
    if !pb.is_empty() {
        return Ok(Box::new(pb));
    }
    let npz = NpzDir::open(path, inputs)?;
    if npz.is_empty() && super::images::holds_images(path) {
        return Err(Error::Invalid(format!(
            "{}: holds images and no .npz samples: give --preprocess SPEC (how an image becomes the model's input, e.g. resize=224x224,rgb,mean=0.485,0.456,0.406,std=0.229,0.224,0.225)",
            path.display()
        )));
    }
    if npz.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no .npz files and no test_data_set_* folders",
            path.display()
        )));
    }
    Ok(Box::new(npz))
}

/// Checks a sample against the model's inputs: every input present, nothing
/// extra, the declared type, and a shape the model can take.
pub fn check_sample(name: &str, sample: &Sample, inputs: &[InputSpec]) -> Result<()> {
    for spec in inputs {
        let Some((_, t)) = sample.iter().find(|(n, _)| *n == spec.name) else {
            let has: Vec<&str> = sample.iter().map(|(n, _)| n.as_str()).collect();
            return Err(sample_err(
                name,
                format!(
                    "has no input '{}' (its arrays: {})",
                    spec.name,
                    if has.is_empty() {
                        "none".to_string()
                    } else {
                        has.join(", ")
                    }
                ),
            ));
        };
        check_array(spec, t.dtype(), t.dims()).map_err(|e| sample_err(name, e))?;
    }
    for (n, _) in sample {
        if !inputs.iter().any(|i| i.name == *n) {
            return Err(sample_err(name, extra_array(n, inputs)));
        }
    }
    Ok(())
}

fn extra_array(n: &str, inputs: &[InputSpec]) -> String {
    let known: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    format!(
        "has an extra array '{n}' (model inputs: {})",
        known.join(", ")
    )
}

/// Whether an array of `dtype` and `dims` fits model input `spec`.
fn check_array(spec: &InputSpec, dtype: DataType, dims: &[usize]) -> Result<(), String> {
    if let Some(dt) = spec.dtype.filter(|&dt| dt != dtype) {
        return Err(format!(
            "input '{}' is {}, the model expects {}",
            spec.name,
            dtype.name(),
            dt.name()
        ));
    }
    if let Some(want) = &spec.dims {
        let ok = want.len() == dims.len()
            && want
                .iter()
                .zip(dims)
                .all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f != n));
        if !ok {
            let want: Vec<String> = want.iter().map(|d| d.to_string()).collect();
            return Err(format!(
                "input '{}' has shape {dims:?}, the model takes [{}]",
                spec.name,
                want.join(", ")
            ));
        }
    }
    Ok(())
}

/// A pre-read check of the arrays of an `.npz` against the model's inputs
/// (`stacked`: each array carries a leading sample axis).
fn fits_inputs(
    inputs: &[InputSpec],
    stacked: bool,
) -> impl Fn(&str, DataType, &[usize]) -> Result<()> + '_ {
    move |name, dtype, dims| {
        // A name no input has is left to check_sample, which reports the
        // sample's missing and extra arrays together.
        let Some(spec) = inputs.iter().find(|i| i.name == name) else {
            return Ok(());
        };
        let dims = match (stacked, dims.split_first()) {
            (false, _) => dims,
            (true, Some((_, rest))) => rest,
            (true, None) => {
                return Err(Error::Invalid(format!(
                    "array '{name}' is a scalar; a stacked .npz needs a leading sample axis"
                )))
            }
        };
        check_array(spec, dtype, dims).map_err(Error::Invalid)
    }
}

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

use crate::error::{Error, Result};
use crate::ir::tensor::{numel, DataType, Tensor};
use crate::ir::types::{Dim, InputSpec};
use crate::onnx::proto::TensorProto;
use crate::onnx::tensor::tensor_from_proto;
use npyz::WriterBuilder;
use prost::bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;
use std::io::Read;
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

// ----- .npy / .npz ----------------------------------------------------------

/// The tensor type of a numpy type string, `None` when unsupported.
fn npy_dtype(ts: &npyz::TypeStr) -> Option<DataType> {
    use npyz::TypeChar;
    Some(match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => DataType::Float,
        (TypeChar::Float, 2) => DataType::Float16,
        (TypeChar::Float, 8) => DataType::Double,
        (TypeChar::Int, 8) => DataType::Int64,
        (TypeChar::Int, 4) => DataType::Int32,
        (TypeChar::Int, 2) => DataType::Int16,
        (TypeChar::Int, 1) => DataType::Int8,
        (TypeChar::Uint, 1) => DataType::Uint8,
        (TypeChar::Bool, 1) => DataType::Bool,
        _ => return None,
    })
}

/// Whether the payload of `ts` already is the tensor's raw bytes
/// (little-endian or byte-sized numbers; booleans need npyz's check).
fn npy_payload_is_raw(ts: &npyz::TypeStr, dtype: DataType) -> bool {
    let little = matches!(
        ts.endianness(),
        npyz::Endianness::Little | npyz::Endianness::Irrelevant
    );
    little && dtype != DataType::Bool
}

/// What a reader is told of an array before its payload is read: its
/// element type and dims. An error refuses the array unread.
pub type ArrayCheck<'a> = &'a dyn Fn(DataType, &[usize]) -> Result<()>;

/// The payload size `dims` of `dtype` declare, refused past `limit` (the
/// bytes the archive entry holds) or when `check` refuses it: nothing is
/// allocated for a header that promises more than the file has.
fn payload_len(
    dtype: DataType,
    dims: &[usize],
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<usize> {
    let len = numel(dims)
        .and_then(|n| dtype.raw_len(n))
        .ok_or_else(|| Error::Invalid(format!("{what}: shape {dims:?} overflows")))?;
    if len as u64 > limit {
        return Err(Error::Invalid(format!(
            "{what}: the header declares {} {dims:?} ({len} bytes), the file holds {limit} bytes",
            dtype.name()
        )));
    }
    check(dtype, dims).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    Ok(len)
}

/// A raw payload of `dims` elements of `dtype`, in one read.
fn read_raw_payload(
    mut r: impl Read,
    dtype: DataType,
    dims: Vec<usize>,
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<Tensor> {
    let len = payload_len(dtype, &dims, limit, what, check)?;
    let mut raw = vec![0u8; len];
    r.read_exact(&mut raw)
        .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    Tensor::from_raw(dtype, dims, Bytes::from(raw))
}

fn npy_to_tensor<R: Read>(
    npy: npyz::NpyFile<R>,
    limit: u64,
    what: &str,
    check: ArrayCheck,
) -> Result<Tensor> {
    use npyz::DType;
    let dims: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran && dims.len() > 1 {
        return Err(Error::Invalid(format!(
            "{what}: Fortran-ordered arrays are not supported"
        )));
    }
    let n = numel(&dims).ok_or_else(|| Error::Invalid(format!("{what}: shape overflows")))?;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(Error::Invalid(format!(
            "{what}: structured arrays are not supported"
        )));
    };
    let bad = |e: std::io::Error| Error::Invalid(format!("{what}: {e}"));
    let Some(dtype) = npy_dtype(&ts) else {
        return Err(Error::Invalid(format!(
            "{what}: numpy dtype {ts} is not supported"
        )));
    };
    if npy_payload_is_raw(&ts, dtype) {
        return read_raw_payload(npy.into_inner(), dtype, dims, limit, what, check);
    }
    payload_len(dtype, &dims, limit, what, check)?;
    // Otherwise through npyz (it swaps byte order, checks booleans), then
    // stored little-endian.
    macro_rules! read {
        ($t:ty) => {{
            let v: Vec<$t> = npy.into_vec().map_err(bad)?;
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
        }};
    }
    let raw: Vec<u8> = match dtype {
        DataType::Float => read!(f32),
        DataType::Float16 => read!(half::f16),
        DataType::Double => read!(f64),
        DataType::Int64 => read!(i64),
        DataType::Int32 => read!(i32),
        DataType::Int16 => read!(i16),
        DataType::Int8 => read!(i8),
        DataType::Uint8 => read!(u8),
        DataType::Bool => {
            let v: Vec<bool> = npy.into_vec().map_err(bad)?;
            v.into_iter().map(u8::from).collect()
        }
        _ => Vec::new(),
    };
    if dtype.raw_len(n) != Some(raw.len()) {
        return Err(Error::Invalid(format!(
            "{what}: {} bytes for shape {dims:?}",
            raw.len()
        )));
    }
    Tensor::from_raw(dtype, dims, Bytes::from(raw))
}

/// The header of an `.npy` stream as numpy writes it for a plain
/// little-endian (or byte-sized) C-ordered array, `{'descr': '<f4',
/// 'fortran_order': False, 'shape': (1, 3, 64, 64), }`: its type and dims.
/// `None` for anything else (other key orders, big-endian, booleans,
/// Fortran order, structured types), which goes through npyz's full
/// Python-literal parser instead (a tenth of the time of a small sample
/// went to that parser).
fn plain_npy_header(text: &str) -> Option<(DataType, Vec<usize>)> {
    let rest = text.trim_end().strip_prefix("{'descr': '")?;
    let (descr, rest) = rest.split_once('\'')?;
    let ts: npyz::TypeStr = descr.parse().ok()?;
    let dtype = npy_dtype(&ts).filter(|&d| npy_payload_is_raw(&ts, d))?;
    let rest = rest.strip_prefix(", 'fortran_order': False, 'shape': (")?;
    let (shape, rest) = rest.split_once(')')?;
    if !matches!(rest.trim(), ", }" | "}" | ",}") {
        return None;
    }
    let dims = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((dtype, dims))
}

/// Reads one `.npy` stream: a plain header (see [`plain_npy_header`]) is
/// parsed here and the payload read in one go; any other goes to npyz
/// (header bytes replayed in front of the rest of the stream).
fn read_npy(mut r: impl Read, limit: u64, what: &str, check: ArrayCheck) -> Result<Tensor> {
    let bad = |e: std::io::Error| Error::Invalid(format!("{what}: {e}"));
    let mut lead = [0u8; 10];
    r.read_exact(&mut lead).map_err(bad)?;
    // Magic, version, header length (u16 in version 1, u32 from 2 on).
    let mut head = lead.to_vec();
    let len = match (&lead[..6], lead[6]) {
        (b"\x93NUMPY", 1) => u16::from_le_bytes([lead[8], lead[9]]) as usize,
        (b"\x93NUMPY", 2 | 3) => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more).map_err(bad)?;
            head.extend_from_slice(&more);
            u32::from_le_bytes([lead[8], lead[9], more[0], more[1]]) as usize
        }
        _ => 0,
    };
    if len as u64 > limit {
        return Err(Error::Invalid(format!(
            "{what}: a header of {len} bytes, the file holds {limit} bytes"
        )));
    }
    let start = head.len();
    head.resize(start + len, 0);
    r.read_exact(&mut head[start..]).map_err(bad)?;
    let plain = std::str::from_utf8(&head[start..])
        .ok()
        .and_then(plain_npy_header);
    match plain {
        Some((dtype, dims)) => read_raw_payload(r, dtype, dims, limit, what, check),
        None => {
            let npy = npyz::NpyFile::new(std::io::Cursor::new(head).chain(r)).map_err(bad)?;
            npy_to_tensor(npy, limit, what, check)
        }
    }
}

/// An [`ArrayCheck`] that is also told the array's name.
pub type NamedArrayCheck<'a> = &'a dyn Fn(&str, DataType, &[usize]) -> Result<()>;

/// Reads every array of an `.npz` file, in name order.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    read_npz_checked(path, &|_, _, _| Ok(()))
}

/// Like [`read_npz`], but `check` sees each array's name, type and dims
/// before its payload is read, and may refuse it (a sample that cannot fit
/// the model is refused without decompressing it). A header that declares
/// more bytes than its archive entry holds is refused unread.
pub fn read_npz_checked(path: &Path, check: NamedArrayCheck) -> Result<BTreeMap<String, Tensor>> {
    let file = crate::onnx::open_regular(path)?;
    let mut archive = npyz::npz::NpzArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        Error::Invalid(format!("{}: not a readable .npz file: {e}", path.display()))
    })?;
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let what = format!("{}: array '{name}'", path.display());
        let file = archive
            .zip_archive()
            .by_name(&npyz::npz::file_name_from_array_name(&name))
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        // The entry's declared size bounds every read (a lying header or a
        // lying zip cannot make us allocate or read more).
        let limit = file.size();
        let t = read_npy(file.take(limit), limit, &what, &|dt, dims| {
            check(&name, dt, dims)
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes named tensors as an `.npz` file (uncompressed, like `np.savez`),
/// atomically.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<()> {
    crate::onnx::save::write_atomic_with(path, |file| {
        let mut npz = npyz::npz::NpzWriter::new(&*file);
        for (name, t) in arrays {
            let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
            let io = |e: std::io::Error| Error::io(path, e);
            macro_rules! put {
                ($t:ty, $v:expr) => {{
                    let v: Vec<$t> = $v;
                    let mut w = npz
                        .array::<$t>(name, Default::default())
                        .map_err(io)?
                        .default_dtype()
                        .shape(&shape)
                        .begin_nd()
                        .map_err(io)?;
                    w.extend(v).map_err(io)?;
                    w.finish().map_err(io)?;
                }};
            }
            match t.dtype() {
                DataType::Float | DataType::Float16 | DataType::Bfloat16 | DataType::Double => {
                    put!(f32, t.to_f32_vec()?)
                }
                DataType::Int64 | DataType::Int32 | DataType::Int16 => put!(i64, t.to_i64_vec()?),
                DataType::Int8 => put!(i8, t.to_i64_vec()?.into_iter().map(|v| v as i8).collect()),
                DataType::Uint8 => put!(u8, t.to_i64_vec()?.into_iter().map(|v| v as u8).collect()),
                DataType::Bool => put!(bool, t.to_i64_vec()?.into_iter().map(|v| v != 0).collect()),
                other => {
                    return Err(Error::Invalid(format!(
                        "output '{name}': {} cannot be written to .npz",
                        other.name()
                    )))
                }
            }
        }
        npz.zip_writer()
            .finish()
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Little-endian payloads are read in one piece, big-endian ones
    /// numpy's own headers take the plain path; what it reads equals what
    /// npyz's full parser reads, on the testdata samples numpy wrote.
    #[test]
    fn numpy_headers_take_the_plain_path_and_read_as_npyz_does() {
        assert_eq!(
            plain_npy_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 64, 64), }          \n"
            ),
            Some((DataType::Float, vec![1, 3, 64, 64]))
        );
        assert_eq!(
            plain_npy_header("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }\n"),
            Some((DataType::Int64, vec![7]))
        );
        assert_eq!(
            plain_npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (), }\n"),
            Some((DataType::Uint8, vec![]))
        );
        for other in [
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
            "{'fortran_order': False, 'descr': '<f4', 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }",
        ] {
            assert_eq!(plain_npy_header(other), None, "{other}");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/digits/cnn_calib");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("testdata")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for path in files.iter().take(4) {
            let fast = read_npz(path).expect("reads");
            let mut archive = npyz::npz::NpzArchive::open(path).expect("opens");
            for (name, t) in &fast {
                let npy = archive.by_name(name).expect("array").expect("present");
                assert_eq!(
                    &npy_to_tensor(npy, u64::MAX, "npyz", &|_, _| Ok(())).expect("npyz"),
                    t,
                    "{path:?} {name}"
                );
            }
        }
    }

    /// through npyz's byte swapping: both give the same tensor.
    #[test]
    fn npz_arrays_of_either_byte_order_read_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.npz");
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let ints: Vec<i64> = (0..6).map(|i| i * 1_000_000_007 - 5).collect();
        {
            let file = std::fs::File::create(&path).expect("create");
            let mut npz = npyz::npz::NpzWriter::new(file);
            for (name, order) in [("big", ">f4"), ("little", "<f4")] {
                let dtype = npyz::DType::Plain(order.parse().expect("type string"));
                let mut w = npz
                    .array::<f32>(name, Default::default())
                    .expect("array")
                    .dtype(dtype)
                    .shape(&[37])
                    .begin_nd()
                    .expect("begin");
                w.extend(values.iter().copied()).expect("values");
                w.finish().expect("finish");
            }
            let mut w = npz
                .array::<i64>("ints", Default::default())
                .expect("array")
                .dtype(npyz::DType::Plain(">i8".parse().expect("type string")))
                .shape(&[2, 3])
                .begin_nd()
                .expect("begin");
            w.extend(ints.iter().copied()).expect("values");
            w.finish().expect("finish");
            npz.zip_writer().finish().expect("zip");
        }
        let arrays = read_npz(&path).expect("reads");
        for name in ["big", "little"] {
            let t = &arrays[name];
            assert_eq!(t.dtype(), DataType::Float);
            assert_eq!(t.dims(), &[37]);
            assert_eq!(t.to_f32_vec().expect("f32"), values, "{name}");
        }
        assert_eq!(arrays["ints"].dims(), &[2, 3]);
        assert_eq!(arrays["ints"].to_i64_vec().expect("i64"), ints);
    }
}

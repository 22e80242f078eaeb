//! Samples from sentences: a text file, one sample a line (a tab splits a
//! sentence pair, for cross-encoders), tokenized by a Hugging Face
//! `tokenizer.json` (the `tokenizers` crate) into the inputs the model
//! declares, each line when its sample is loaded.
//!
//! Inputs are matched by name: `input_ids` (also `ids`, `input`,
//! `tokens`), `attention_mask` (`mask`), `token_type_ids` (`segment_ids`,
//! `token_type`), `position_ids`; each `[batch, seq]`, int64 or int32,
//! batch one. A sample is as long as its tokens (truncated to
//! `max_length`, default 128), or padded to the sequence length the model
//! fixes. Any other input is an error naming it.

use super::samples::{Sample, SampleSource};
use crate::error::{Error, Result};
use crate::ir::types::{Dim, InputSpec};
use crate::ir::{DataType, Tensor};
use std::path::{Path, PathBuf};
use tokenizers::{EncodeInput, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Tokens a sample keeps when neither the model nor the user says.
pub const DEFAULT_MAX_LENGTH: usize = 128;

/// What a model input takes from an encoding.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Ids,
    Mask,
    TypeIds,
    Positions,
}

fn role(name: &str) -> Option<Role> {
    let n = name.to_ascii_lowercase();
    // The last path segment, without a TensorFlow-style ":0".
    let n = n.split(':').next().unwrap_or(&n);
    let n = n.rsplit(['/', '.']).next().unwrap_or(n).to_string();
    Some(
        if n.contains("input_ids") || ["ids", "input", "tokens", "input_id"].contains(&n.as_str()) {
            Role::Ids
        } else if n.contains("attention_mask") || n == "mask" || n == "input_mask" {
            Role::Mask
        } else if n.contains("token_type") || n.contains("segment") {
            Role::TypeIds
        } else if n.contains("position") {
            Role::Positions
        } else {
            return None;
        },
    )
}

/// Sentences as samples of a model's token inputs.
pub struct TextSource {
    path: PathBuf,
    lines: Vec<String>,
    tokenizer: Tokenizer,
    inputs: Vec<(String, Role, DataType)>,
    max_length: usize,
}

impl TextSource {
    /// The lines of `path`, tokenized by `tokenizer` (a tokenizer.json)
    /// for the model with `inputs`; `max_length` caps a sample's tokens.
    pub fn open(
        path: &Path,
        tokenizer: &Path,
        max_length: Option<usize>,
        inputs: &[InputSpec],
    ) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: a folder; sentences come from a text file, one a line",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no sentences (one a line)",
                path.display()
            )));
        }
        let mut tok = Tokenizer::from_file(tokenizer).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a Hugging Face tokenizer.json: {e}",
                tokenizer.display()
            ))
        })?;
        let mut roles = Vec::new();
        let mut fixed_seq = None;
        for spec in inputs {
            let fits = |why: String| Error::Invalid(format!("input '{}': {why}", spec.name));
            let role = role(&spec.name).ok_or_else(|| {
                fits("not one a tokenizer gives (input_ids, attention_mask, token_type_ids, position_ids): calibrate this model from .npz samples".into())
            })?;
            let dtype = spec.dtype.unwrap_or(DataType::Int64);
            if !matches!(dtype, DataType::Int64 | DataType::Int32) {
                return Err(fits(format!(
                    "is {}; token inputs are int64 or int32",
                    dtype.name()
                )));
            }
            if let Some(dims) = &spec.dims {
                if dims.len() != 2 {
                    return Err(fits(format!(
                        "has rank {}; token inputs are [batch, sequence]",
                        dims.len()
                    )));
                }
                if let Dim::Fixed(n) = dims[0] {
                    if n != 1 {
                        return Err(fits(format!(
                            "takes batch {n}; a sentence is a sample (batch 1)"
                        )));
                    }
                }
                if let Dim::Fixed(s) = dims[1] {
                    if fixed_seq.is_some_and(|f| f != s) {
                        return Err(fits(format!(
                            "has sequence length {s}, another token input {}",
                            fixed_seq.unwrap_or(0)
                        )));
                    }
                    fixed_seq = Some(s);
                }
            }
            roles.push((spec.name.clone(), role, dtype));
        }
        if !roles.iter().any(|(_, r, _)| *r == Role::Ids) {
            return Err(Error::Invalid(format!(
                "the model has no token-id input (inputs: {})",
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let max_length = match (fixed_seq, max_length) {
            (Some(s), Some(m)) if m != s => {
                return Err(Error::Invalid(format!(
                    "max length {m}: the model's token inputs are fixed at {s}"
                )))
            }
            (Some(s), _) => s,
            (None, Some(0)) => return Err(Error::Invalid("max length must be at least 1".into())),
            (None, Some(m)) => m,
            (None, None) => DEFAULT_MAX_LENGTH,
        };
        tok.with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| Error::Invalid(format!("{}: truncation: {e}", tokenizer.display())))?;
        match fixed_seq {
            Some(s) => {
                let mut pad = tok.get_padding().cloned().unwrap_or_else(|| {
                    let token = ["[PAD]", "<pad>", "<|endoftext|>"]
                        .into_iter()
                        .find(|t| tok.token_to_id(t).is_some())
                        .unwrap_or("[PAD]");
                    PaddingParams {
                        pad_id: tok.token_to_id(token).unwrap_or(0),
                        pad_token: token.to_string(),
                        ..Default::default()
                    }
                });
                pad.strategy = PaddingStrategy::Fixed(s);
                tok.with_padding(Some(pad));
            }
            None => {
                tok.with_padding(None);
            }
        }
        Ok(TextSource {
            path: path.to_path_buf(),
            lines,
            tokenizer: tok,
            inputs: roles,
            max_length,
        })
    }

    /// The tokens a sample keeps at most.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
}

fn ints(dtype: DataType, dims: Vec<usize>, v: impl Iterator<Item = i64>) -> Result<Tensor> {
    let raw: Vec<u8> = match dtype {
        DataType::Int32 => v.flat_map(|x| (x as i32).to_le_bytes()).collect(),
        _ => v.flat_map(|x| x.to_le_bytes()).collect(),
    };
    Tensor::from_raw(dtype, dims, raw.into())
}

impl SampleSource for TextSource {
    fn len(&self) -> usize {
        self.lines.len()
    }
    fn name(&self, i: usize) -> String {
        format!("{} line {}", self.path.display(), i + 1)
    }
    fn load(&self, i: usize) -> Result<Sample> {
        let line = self
            .lines
            .get(i)
            .ok_or_else(|| Error::Invalid(format!("no line {i} of {}", self.lines.len())))?;
        let input: EncodeInput = match line.split_once('\t') {
            Some((a, b)) => (a, b).into(),
            None => line.as_str().into(),
        };
        let enc = self
            .tokenizer
            .encode(input, true)
            .map_err(|e| Error::Invalid(format!("{}: cannot tokenize: {e}", self.name(i))))?;
        let n = enc.get_ids().len();
        if n == 0 {
            return Err(Error::Invalid(format!("{}: no tokens", self.name(i))));
        }
        let mut sample = Sample::new();
        for (name, role, dtype) in &self.inputs {
            let dims = vec![1, n];
            let t = match role {
                Role::Ids => ints(*dtype, dims, enc.get_ids().iter().map(|&x| x as i64))?,
                Role::Mask => ints(
                    *dtype,
                    dims,
                    enc.get_attention_mask().iter().map(|&x| x as i64),
                )?,
                Role::TypeIds => ints(*dtype, dims, enc.get_type_ids().iter().map(|&x| x as i64))?,
                Role::Positions => ints(*dtype, dims, 0..n as i64)?,
            };
            sample.push((name.clone(), t));
        }
        Ok(sample)
    }
    fn describe(&self) -> String {
        format!(
            "text:{}:{}:{}",
            self.path.display(),
            self.lines.len(),
            self.max_length
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel)
    }

    fn specs(seq: Option<usize>) -> Vec<InputSpec> {
        ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|n| InputSpec {
                name: n.to_string(),
                dtype: Some(DataType::Int64),
                dims: Some(vec![
                    Dim::Symbolic("batch".into()),
                    seq.map_or(Dim::Symbolic("seq".into()), Dim::Fixed),
                ]),
            })
            .collect()
    }

    fn open(seq: Option<usize>, max: Option<usize>) -> TextSource {
        TextSource::open(
            &testdata("text/sentences.txt"),
            &testdata("text/tokenizer.json"),
            max,
            &specs(seq),
        )
        .unwrap()
    }

    fn get(s: &Sample, name: &str) -> Vec<i64> {
        s.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_i64_vec()
            .unwrap()
    }

    #[test]
    fn a_sentence_is_cls_tokens_sep_and_a_pair_has_its_second_segment() {
        let src = open(None, None);
        assert_eq!(src.len(), 32);
        let s = src.load(0).unwrap();
        let ids = get(&s, "input_ids");
        // [CLS] = 2 ... [SEP] = 3 (testdata/text/tokenizer.json).
        assert_eq!((ids[0], *ids.last().unwrap()), (2, 3));
        assert!(get(&s, "attention_mask").iter().all(|&m| m == 1));
        assert!(get(&s, "token_type_ids").iter().all(|&t| t == 0));
        // Line 5 is a tab-separated pair: type ids 0…0 1…1.
        let types = get(&src.load(4).unwrap(), "token_type_ids");
        assert_eq!(types[0], 0);
        assert_eq!(*types.last().unwrap(), 1);
        assert!(types.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_fixed_sequence_pads_and_max_length_truncates() {
        let s = open(Some(16), None).load(2).unwrap();
        let (ids, mask) = (get(&s, "input_ids"), get(&s, "attention_mask"));
        assert_eq!(ids.len(), 16);
        let n = mask.iter().filter(|&&m| m == 1).count();
        assert!(n < 16 && mask[..n].iter().all(|&m| m == 1));
        assert!(ids[n..].iter().all(|&i| i == 0), "[PAD] is 0: {ids:?}");
        let short = open(None, Some(5));
        assert_eq!(short.max_length(), 5);
        for i in 0..short.len() {
            let ids = get(&short.load(i).unwrap(), "input_ids");
            assert!(ids.len() <= 5 && *ids.last().unwrap() == 3, "{ids:?}");
        }
        assert!(TextSource::open(
            &testdata("text/sentences.txt"),
            &testdata("text/tokenizer.json"),
            Some(8),
            &specs(Some(16))
        )
        .is_err());
    }

    #[test]
    fn inputs_are_matched_by_the_names_exporters_give_them() {
        for (n, r) in [
            ("input_ids", Some(Role::Ids)),
            ("encoder/input_ids:0", Some(Role::Ids)),
            ("attention_mask", Some(Role::Mask)),
            ("input_mask", Some(Role::Mask)),
            ("token_type_ids", Some(Role::TypeIds)),
            ("segment_ids", Some(Role::TypeIds)),
            ("position_ids", Some(Role::Positions)),
            ("pixel_values", None),
        ] {
            assert_eq!(role(n), r, "{n}");
        }
    }
}

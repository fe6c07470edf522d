//! A GGUF file opened for loading: header and metadata parsed and checked up front, tensors read on
//! demand. Every error names the file. Knows nothing about architectures.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::{QTensor, gguf_file};

use super::error::{Error, Result, message};

pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<File>,
    /// Bytes of tensor data in the file, and how many of them were read so far.
    tensor_bytes: u64,
    read_bytes: u64,
    /// Told the fraction of tensor data read after each tensor.
    progress: Option<Box<dyn FnMut(f32) + Send>>,
}

impl GgufFile {
    /// Opens and validates the header: magic, version, metadata, and that every tensor's data lies
    /// inside the file (so a truncated download fails here, not halfway through loading).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let file_size = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::InvalidGguf {
            path: path.to_owned(),
            reason: message(&e),
        })?;
        if matches!(content.magic, gguf_file::VersionedMagic::GgufV1) {
            return Err(Error::InvalidGguf {
                path: path.to_owned(),
                reason: "GGUF version 1 is not supported (need v2 or v3)".into(),
            });
        }
        let mut tensor_bytes = 0u64;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if !elems.is_multiple_of(block) {
                return Err(Error::BadTensor {
                    path: path.to_owned(),
                    name: name.clone(),
                    reason: format!("{elems} elements is not a multiple of the block size {block}"),
                });
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            tensor_bytes = tensor_bytes.saturating_add(bytes);
            let end = content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes);
            if end > file_size {
                return Err(Error::InvalidGguf {
                    path: path.to_owned(),
                    reason: format!(
                        "truncated: tensor '{name}' ends at byte {end} but the file has {file_size} bytes"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_owned(),
            content,
            reader,
            tensor_bytes,
            read_bytes: 0,
            progress: None,
        })
    }

    /// Reports the fraction of tensor data read (0 to 1) to `progress` after each tensor.
    pub fn report_progress(&mut self, progress: Box<dyn FnMut(f32) + Send>) {
        self.progress = Some(progress);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn value(&self, key: &str) -> Result<&gguf_file::Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::MissingMetadata {
                path: self.path.clone(),
                key: key.to_owned(),
            })
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> Error {
        Error::BadMetadata {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: message(&e),
        }
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        self.value(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| self.bad(key, e))
    }

    /// Integer metadata of any width (writers disagree on u32/u64/i32).
    pub fn usize(&self, key: &str) -> Result<usize> {
        use gguf_file::Value as V;
        let v = self.value(key)?;
        let n: Option<u64> = match v {
            V::U8(x) => Some(u64::from(*x)),
            V::U16(x) => Some(u64::from(*x)),
            V::U32(x) => Some(u64::from(*x)),
            V::U64(x) => Some(*x),
            V::I8(x) => u64::try_from(*x).ok(),
            V::I16(x) => u64::try_from(*x).ok(),
            V::I32(x) => u64::try_from(*x).ok(),
            V::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::BadMetadata {
                path: self.path.clone(),
                key: key.to_owned(),
                reason: format!(
                    "expected a non-negative integer, found {:?}",
                    v.value_type()
                ),
            })
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.content.metadata.contains_key(key) {
            self.usize(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        use gguf_file::Value as V;
        match self.value(key)? {
            V::F32(x) => Ok(*x),
            V::F64(x) => Ok(*x as f32),
            _ => self.usize(key).map(|n| n as f32),
        }
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        if self.content.metadata.contains_key(key) {
            self.f32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.to_bool().map(Some).map_err(|e| self.bad(key, e)),
        }
    }

    pub fn array(&self, key: &str) -> Result<&Vec<gguf_file::Value>> {
        self.value(key)?.to_vec().map_err(|e| self.bad(key, e))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::MissingTensor {
                path: self.path.clone(),
                name: name.to_owned(),
            });
        }
        let tensor = self
            .content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::BadTensor {
                path: self.path.clone(),
                name: name.to_owned(),
                reason: message(&e),
            })?;
        if let Some(progress) = &mut self.progress {
            self.read_bytes = self
                .read_bytes
                .saturating_add(tensor.storage_size_in_bytes() as u64);
            progress((self.read_bytes as f64 / self.tensor_bytes.max(1) as f64).min(1.0) as f32);
        }
        Ok(tensor)
    }

    /// A tensor with the shape the model code expects (candle order: rows first).
    pub fn tensor_shaped(
        &mut self,
        name: &str,
        dims: &[usize],
        device: &Device,
    ) -> Result<QTensor> {
        let t = self.tensor(name, device)?;
        if t.shape().dims() != dims {
            return Err(Error::BadTensor {
                path: self.path.clone(),
                name: name.to_owned(),
                reason: format!("expected shape {dims:?}, found {:?}", t.shape().dims()),
            });
        }
        Ok(t)
    }
}

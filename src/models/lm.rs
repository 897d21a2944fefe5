//! Causal language models, whatever the family: token embeddings (plus learned positions in
//! GPT-2), a stack of causal pre-norm [`Block`]s, a final norm and an LM head over the token
//! table (tied) or its own (untied) — both may be split into row blocks — with forward,
//! backward and K/V-cached decoding. A family (`gpt2`, `llama`, `qwen2`) names its tensors and
//! builds the [`LmParts`]; everything else is here.

use super::{Run, TaskModel};
use crate::data::batch::{row_weights, LmBatch};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Recorder, Tensor};
use crate::nn::block::{Block, BlockActs, DecodeBufs, Pass, Scratch};
use crate::nn::layers::{lm_head_backward_of, lm_head_of, KvCache, Norm, NormStats};
use crate::nn::{site, Drop, ParamSet, Train};
use crate::ops::cross_entropy::{cross_entropy, IGNORE_INDEX};
use crate::ops::decoder::rope_table_from;
use crate::ops::elementwise::axpby;
use crate::ops::embedding::{embedding, embedding_backward, embedding_backward_parts, EmbeddingIndex};

/// What a family builds: parameter ids and the settings the shared code needs.
pub struct LmParts {
    /// The token table (a split tensor).
    pub tokens: usize,
    /// Learned position embeddings (GPT-2's `wpe`).
    pub positions: Option<usize>,
    pub blocks: Vec<Block>,
    /// The norm before the head.
    pub norm: Norm,
    /// The head's table: `tokens` when tied, else its own split tensor.
    pub head: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub hidden_dropout: f32,
    pub attention_dropout: f32,
    pub embedding_dropout: f32,
    /// RoPE: (head_dim / 2, theta).
    pub rope: Option<(usize, f64)>,
}

/// A causal language model, parameters and gradients on the GPU.
pub struct CausalLm {
    pub params: ParamSet,
    pub parts: LmParts,
    /// `config.json` for a saved model (its `architectures` set).
    pub config: serde_json::Value,
    pub eos: Option<u32>,
}

/// Every activation the backward needs, planned once per batch shape.
pub struct LmActs {
    batch: usize,
    seq: usize,
    train: std::cell::Cell<Option<Train>>,
    ids: Tensor,
    pos: Tensor,
    mask: Tensor,
    targets: Tensor,
    row_w: Tensor,
    table: Option<Tensor>,
    index: Option<[EmbeddingIndex; 2]>,
    emb: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<BlockActs>,
    lnf: Tensor,
    stf: NormStats,
    /// `[batch * seq, vocab]`
    pub logits: Tensor,
    /// `[loss, counted tokens]`
    pub loss: Tensor,
    dlogits: Tensor,
    s: Scratch,
}

/// Incremental decoding state (batch 1): the K/V cache and the buffers of one chunk.
pub struct LmDecoder {
    cache: KvCache,
    ids: Tensor,
    pos: Tensor,
    table: Tensor,
    tmp: Tensor,
    bufs: DecodeBufs,
    /// `[1, vocab]`: the logits after the last token fed.
    pub logits: Tensor,
}

impl LmDecoder {
    /// The K/V cache: positions fed so far, capacity, tokens per call.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
    /// Positions fed so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

impl CausalLm {
    pub fn vocab_size(&self) -> usize {
        self.parts.vocab
    }
    /// Longest sequence the model takes.
    pub fn max_positions(&self) -> usize {
        self.parts.max_positions
    }
    /// The end-of-text token, if the config names one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// The padding id of batches (the end-of-text token, else 0).
    pub fn pad_id(&self) -> u32 {
        self.eos.unwrap_or(0)
    }
    fn width(&self) -> usize {
        self.parts.blocks.first().map_or(0, |b| b.hidden)
    }
    fn drops(&self, train: Option<Train>) -> (Drop, Drop) {
        let p = &self.parts;
        (Drop::new(train, p.hidden_dropout, p.attention_dropout), Drop::new(train, p.embedding_dropout, 0.0))
    }

    /// Plan the activations for batches of `batch` sequences of `seq` tokens.
    pub fn acts(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<LmActs> {
        let p = &self.parts;
        if batch == 0 || seq == 0 {
            return shape_err("causal lm", "empty batch");
        }
        if seq > p.max_positions {
            return shape_err(
                "causal lm",
                format!("sequences of {seq} tokens exceed the model's {} positions", p.max_positions),
            );
        }
        let (bt, h) = (batch * seq, self.width());
        let f = |s: &[usize]| gpu.zeros(s);
        let layers =
            p.blocks.iter().map(|b| b.acts(gpu, batch, seq, p.attention_dropout > 0.0)).collect::<Result<_>>()?;
        let table = match p.rope {
            Some((half, theta)) => Some(gpu.from_f32(&rope_table_from(0, seq, half, theta), &[2 * seq * half])?),
            None => None,
        };
        Ok(LmActs {
            batch,
            seq,
            train: Default::default(),
            ids: gpu.zeros_u32(&[bt])?,
            pos: gpu.zeros_u32(&[bt])?,
            mask: gpu.zeros_u32(&[bt])?,
            targets: gpu.zeros_u32(&[bt])?,
            row_w: f(&[bt])?,
            table,
            index: None,
            emb: f(&[bt, h])?,
            xs: (0..=p.blocks.len()).map(|_| f(&[bt, h])).collect::<Result<_>>()?,
            layers,
            lnf: f(&[bt, h])?,
            stf: NormStats::new(gpu, &p.norm, bt)?,
            logits: f(&[bt, p.vocab])?,
            loss: f(&[2])?,
            dlogits: f(&[bt, p.vocab])?,
            s: p.blocks[0].scratch(gpu, bt)?,
        })
    }

    /// Check a batch against the model and upload it into `acts`.
    pub fn upload(&self, gpu: &Gpu, acts: &mut LmActs, b: &LmBatch) -> Result<()> {
        let n = b.batch * b.seq;
        super::check_tokens("causal lm", (acts.batch, acts.seq), (b.batch, b.seq), &b.ids, &b.mask)?;
        let pos: Vec<u32> = (0..n).map(|i| (i % b.seq) as u32).collect();
        gpu.write_u32(&acts.ids, &b.ids)?;
        gpu.write_u32(&acts.pos, &pos)?;
        gpu.write_u32(&acts.mask, &b.mask)?;
        let targets = b.targets();
        gpu.write_u32(&acts.targets, &targets)?;
        gpu.write_f32(&acts.row_w, &row_weights(&targets))?;
        acts.index = Some([
            EmbeddingIndex::upload(gpu, &b.ids, self.parts.vocab)?,
            EmbeddingIndex::upload(gpu, &pos, self.parts.max_positions)?,
        ]);
        Ok(())
    }

    fn pass<'a>(&self, a: &'a LmActs, d: &'a Drop, layer: usize) -> Pass<'a> {
        Pass { batch: a.batch, seq: a.seq, mask: Some(&a.mask), table: a.table.as_ref(), drop: d, layer }
    }

    /// Plan incremental decoding of up to `capacity` positions, fed `chunk` tokens at a time at
    /// most (a prompt in chunks, then one token per step).
    pub fn decoder(&self, gpu: &Gpu, capacity: usize, chunk: usize) -> Result<LmDecoder> {
        let x = &self.parts;
        if capacity > x.max_positions {
            return shape_err("decoder", format!("{capacity} positions exceed the model's {}", x.max_positions));
        }
        let b0 = &x.blocks[0];
        let cache = KvCache::new(gpu, x.blocks.len(), capacity, chunk, b0.attn.kv_heads * b0.attn.head_dim)?;
        let t = cache.chunk();
        let half = x.rope.map_or(1, |r| r.0);
        Ok(LmDecoder {
            ids: gpu.zeros_u32(&[t])?,
            pos: gpu.zeros_u32(&[t])?,
            table: gpu.zeros(&[2 * t * half])?,
            tmp: gpu.zeros(&[t, b0.hidden])?,
            bufs: DecodeBufs::new(gpu, b0, t)?,
            logits: gpu.zeros(&[1, x.vocab])?,
            cache,
        })
    }

    /// Feed the next `ids` (1 to `chunk` tokens) with the K/V cache: each attends to every
    /// position fed before it. Records and submits; the logits after the last one are in
    /// `d.logits`. The same values as [`CausalLm::forward`] on the whole sequence.
    pub fn decode_chunk(&self, gpu: &Gpu, d: &mut LmDecoder, ids: &[u32]) -> Result<()> {
        let (p, x) = (&self.params, &self.parts);
        p.set_lora_train(None);
        let past = d.cache.begin(ids, x.vocab)?;
        let t = ids.len();
        let idt = d.ids.narrow(0, &[t])?;
        gpu.write_u32(&idt, ids)?;
        let table = match x.rope {
            Some((half, theta)) => {
                let table = d.table.narrow(0, &[2 * t * half])?;
                gpu.write_f32(&table, &rope_table_from(past, t, half, theta))?;
                Some(table)
            }
            None => None,
        };
        let b = d.bufs.rows(t)?;
        let mut rec = gpu.recorder();
        let rc = &mut rec;
        p.gather_rows(rc, x.tokens, &idt, &b.x)?;
        if let Some(pos) = x.positions {
            let (post, tmp) = (d.pos.narrow(0, &[t])?, d.tmp.narrow(0, &[t, d.tmp.cols()])?);
            gpu.write_u32(&post, &(past as u32..(past + t) as u32).collect::<Vec<_>>())?;
            embedding(rc, p.p(pos), &post, &tmp)?;
            axpby(rc, 1.0, &tmp, 1.0, &b.x)?;
        }
        for (l, blk) in x.blocks.iter().enumerate() {
            blk.decode(rc, p, l, &b, &d.cache, table.as_ref(), past)?;
        }
        let (n, st) = b.norm_out();
        x.norm.forward(rc, p, &b.x, n, st)?;
        lm_head_of(rc, p, x.head, n, t - 1, &d.logits)?;
        rec.submit()?;
        d.cache.advance(t);
        Ok(())
    }

    /// Feed `ids` at the next positions (in chunks when longer than the decoder's) and return
    /// the logits after the last one. Too many ids, or an id outside the vocabulary, is refused
    /// before any is fed.
    pub async fn decode_async(&self, gpu: &Gpu, d: &mut LmDecoder, ids: &[u32]) -> Result<Vec<f32>> {
        let capacity = d.cache.capacity();
        if ids.is_empty() || d.len() + ids.len() > capacity {
            return shape_err(
                "decoder",
                format!("{} + {} tokens; expected 1 to {} more", d.len(), ids.len(), capacity - d.len()),
            );
        }
        let nv = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= nv) {
            return shape_err("decoder", format!("token id {bad} is not below the vocabulary size {nv}"));
        }
        for c in ids.chunks(d.cache.chunk()) {
            self.decode_chunk(gpu, d, c)?;
        }
        gpu.read_f32(&d.logits).await
    }

    /// [`CausalLm::decode_async`], blocking (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode(&self, gpu: &Gpu, d: &mut LmDecoder, ids: &[u32]) -> Result<Vec<f32>> {
        pollster::block_on(self.decode_async(gpu, d, ids))
    }

    /// Every parameter under its Hugging Face name, in the dtype it was loaded in.
    pub async fn state(&self, gpu: &Gpu) -> Result<Vec<(String, crate::io::weights::HostTensor)>> {
        self.params.state(gpu).await
    }
}

/// A causal LM as the optimizer drives it (see [`crate::models::Task`]).
pub type LmTask<'a> = crate::models::Task<'a, CausalLm>;

impl TaskModel for CausalLm {
    type Acts = LmActs;
    fn params(&self) -> &ParamSet {
        &self.params
    }
    /// [`CausalLm::forward`] with another parameter set of the same layout and optional noise
    /// on the token embeddings (TRAM-x, R3F).
    fn forward_acts(&self, rec: &mut Recorder, a: &LmActs, run: Run) -> Result<()> {
        let Run { params: p, with_loss, train, noise } = run;
        let x = &self.parts;
        a.train.set(train);
        p.set_lora_train(train);
        let (d, de) = self.drops(train);
        // Embeddings are summed in `emb` when anything follows the gather, else in x_0 itself.
        let direct = x.positions.is_none() && !de.hidden();
        let e = if direct { &a.xs[0] } else { &a.emb };
        p.gather_rows(rec, x.tokens, &a.ids, e)?;
        if let Some(n) = noise {
            n.fill(rec, &a.s.dtmp)?;
            axpby(rec, 1.0, &a.s.dtmp, 1.0, e)?;
        }
        if let Some(pos) = x.positions {
            embedding(rec, p.p(pos), &a.pos, &a.s.dtmp)?;
            axpby(rec, 1.0, &a.s.dtmp, 1.0, e)?;
        }
        if !direct {
            de.apply(rec, e, &a.xs[0], site::EMB, false)?;
        }
        for (l, (blk, la)) in x.blocks.iter().zip(&a.layers).enumerate() {
            blk.forward(rec, p, &a.xs[l], &a.xs[l + 1], la, &a.s, &self.pass(a, &d, l))?;
        }
        x.norm.forward(rec, p, &a.xs[x.blocks.len()], &a.lnf, &a.stf)?;
        lm_head_of(rec, p, x.head, &a.lnf, 0, &a.logits)?;
        if with_loss {
            cross_entropy(rec, &a.logits, &a.targets, &a.loss, Some(&a.dlogits), IGNORE_INDEX, 1.0)?;
        }
        Ok(())
    }
    /// The backward pass from a given gradient of the logits; `input_grad = false` leaves out
    /// the token-embedding path of the input (a branch whose embeddings were detached). A tied
    /// head's gradient always reaches the table.
    fn backward_acts(&self, rec: &mut Recorder, a: &LmActs, dlogits: &Tensor, input_grad: bool) -> Result<()> {
        let (p, x, s) = (&self.params, &self.parts, &a.s);
        p.set_lora_train(a.train.get());
        let Some(index) = &a.index else {
            return shape_err("causal lm", "backward before a batch was uploaded");
        };
        let (d, de) = self.drops(a.train.get());
        let (mut dx, mut dx2) = (s.dx.clone(), s.dx2.clone());
        lm_head_backward_of(rec, p, x.head, &a.lnf, dlogits, &s.dh)?;
        x.norm.backward(rec, p, &a.xs[x.blocks.len()], &s.dh, &a.stf, &dx, false)?;
        for (l, (blk, la)) in x.blocks.iter().zip(&a.layers).enumerate().rev() {
            blk.backward(rec, p, &a.xs[l], la, s, &mut dx, &mut dx2, &self.pass(a, &d, l))?;
        }
        let demb = de.back(rec, &dx, &s.dtmp, site::EMB)?;
        if let Some(table) = p.grad_parts(x.tokens).filter(|_| input_grad) {
            embedding_backward_parts(rec, demb, &index[0], table)?;
        }
        if let Some(gpos) = x.positions.and_then(|pos| p.g(pos)) {
            embedding_backward(rec, demb, &index[1], gpos)?;
        }
        Ok(())
    }
    fn outputs(acts: &LmActs) -> (&Tensor, &Tensor, &Tensor) {
        (&acts.logits, &acts.loss, &acts.dlogits)
    }
    fn row_weights(acts: &LmActs) -> Option<&Tensor> {
        Some(&acts.row_w)
    }
}

use super::*;
use tramway::gpu::ArenaBuilder;
use tramway::ops::embedding::*;
use tramway::ops::reference as r;

#[test]
fn embedding_gather_and_deterministic_scatter_add() {
    for (ci, &(vocab, dim, n)) in [(1, 1, 1), (5, 3, 17), (50, 70, 300), (1000, 64, 40)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let w = rng.vec(vocab * dim);
        // Few distinct ids, so many positions share one row of the gradient.
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab.min(7)) as u32).collect();
        let dout = rng.vec(n * dim);
        let prior = rng.vec(vocab * dim);
        let wt = up_shape(&w, &[vocab, dim]);
        let idt = gpu().from_u32(&ids, &[n]).unwrap();
        let out = gpu().zeros(&[n, dim]).unwrap();
        let index = EmbeddingIndex::upload(gpu(), &ids, vocab).unwrap();
        let run = || {
            let dw = up_shape(&prior, &[vocab, dim]);
            let mut rc = rec();
            embedding(&mut rc, &wt, &idt, &out).unwrap();
            embedding_backward(&mut rc, &up(&dout), &index, &dw).unwrap();
            rc.submit().unwrap();
            down(&dw)
        };
        let dw = run();
        assert_eq!(
            down(&out),
            r::embedding(&w, dim, &ids).iter().map(|&v| v as f32).collect::<Vec<_>>(),
            "gather is exact"
        );
        let want: Vec<f64> =
            r::embedding_backward(&dout, dim, &ids, vocab).iter().zip(&prior).map(|(a, &b)| a + b as f64).collect();
        // Sums of up to n terms in f32: 1e-6 * n.
        close("embedding dw", &dw, &want, 1e-6 * n as f64, 1e-6);
        // The reference backward against finite differences of the reference gather.
        let wdw = r::embedding_backward(&dout, dim, &ids, vocab);
        fd_check("embedding reference", &w, &wdw, 12, |ws| dot(&dout, &r::embedding(ws, dim, &ids)));
        let again = run();
        assert!(
            dw.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
            "backward must be bitwise reproducible"
        );
    }
}

/// A table above one binding is stored as row blocks; gather and scatter-add over the blocks must
/// equal the whole-table result bitwise, and a tensor that may not be split is refused clearly.
#[test]
fn split_table_matches_whole_table() {
    let (vocab, dim, n) = (53, 12, 40);
    let mut rng = Rng::new(31);
    let w = rng.vec(vocab * dim);
    // Ids in every block, including the first and last rows and a short final block.
    let mut ids: Vec<u32> = (0..n - 3).map(|_| rng.below(vocab) as u32).collect();
    ids.extend([0, vocab as u32 - 1, 17]);
    let dout = rng.vec(n * dim);
    // 12 floats per row, 48 bytes; a 1024-byte binding holds 21 rows: blocks of 21, 21, 11.
    let mut ab = ArenaBuilder::new().max_chunk_bytes(1024);
    ab.add("bias", &[5]);
    let t = ab.add_split("table", &[vocab, dim]);
    let arena = ab.build(gpu(), "split").unwrap();
    let parts = arena.parts(t);
    assert_eq!(parts.iter().map(|p| (p.row0, p.tensor.rows())).collect::<Vec<_>>(), [(0, 21), (21, 21), (42, 11)]);
    arena.write(gpu(), t, &w).unwrap();
    assert_eq!(arena.read_blocking(gpu(), t).unwrap(), w, "blocks read back in order");
    let grads = arena.layout().build(gpu(), "split grads").unwrap();
    let idt = gpu().from_u32(&ids, &[n]).unwrap();
    let index = EmbeddingIndex::upload(gpu(), &ids, vocab).unwrap();
    let (out, out_whole) = (gpu().zeros(&[n, dim]).unwrap(), gpu().zeros(&[n, dim]).unwrap());
    let whole = up_shape(&w, &[vocab, dim]);
    let dw_whole = gpu().zeros(&[vocab, dim]).unwrap();
    let mut rc = rec();
    embedding_parts(&mut rc, parts, &idt, &out).unwrap();
    embedding(&mut rc, &whole, &idt, &out_whole).unwrap();
    embedding_backward_parts(&mut rc, &up(&dout), &index, grads.parts(t)).unwrap();
    embedding_backward(&mut rc, &up(&dout), &index, &dw_whole).unwrap();
    rc.submit().unwrap();
    assert_eq!(down(&out), down(&out_whole));
    assert_eq!(grads.read_blocking(gpu(), t).unwrap(), down(&dw_whole));
    // A row wider than a binding, or a big tensor not declared splittable, is an error.
    let mut bad = ArenaBuilder::new().max_chunk_bytes(1024);
    bad.add("table", &[vocab, dim]);
    let e = bad.build(gpu(), "params").err().unwrap().to_string();
    assert!(e.contains("tensor table [53, 12]") && e.contains("cannot be bound whole"), "{e}");
    let mut wide = ArenaBuilder::new().max_chunk_bytes(256);
    wide.add_split("wide", &[2, 100]);
    let e = wide.build(gpu(), "params").err().unwrap().to_string();
    assert!(e.contains("one row"), "{e}");
}

#[test]
fn embedding_index_rejects_out_of_vocab_ids() {
    let e = EmbeddingIndex::upload(gpu(), &[1, 9, 2], 5).err().unwrap().to_string();
    assert!(e.contains("token id 9 at position 1") && e.contains("vocabulary of 5"), "{e}");
}

use super::*;
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

#[test]
fn embedding_index_rejects_out_of_vocab_ids() {
    let e = EmbeddingIndex::upload(gpu(), &[1, 9, 2], 5).err().unwrap().to_string();
    assert!(e.contains("token id 9 at position 1") && e.contains("vocabulary of 5"), "{e}");
}

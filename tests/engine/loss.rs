use super::*;
use tramway::ops::cross_entropy::*;
use tramway::ops::reference as r;

// logsumexp in f32 over <= a few hundred classes and a tree mean: 1e-5 relative.
#[test]
fn cross_entropy_with_ignored_rows() {
    for (ci, &(rows, cols)) in [(1, 1), (1, 2), (9, 5), (70, 130), (3, 1000)].iter().enumerate() {
        let mut rng = Rng::new(ci as u64);
        let logits: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 5.0).collect();
        let targets: Vec<u32> =
            (0..rows).map(|i| if i % 3 == 2 { IGNORE_INDEX } else { rng.below(cols) as u32 }).collect();
        let lt = up_shape(&logits, &[rows, cols]);
        let tt = gpu().from_u32(&targets, &[rows]).unwrap();
        let out = gpu().zeros(&[2]).unwrap();
        let dl = gpu().zeros(&[rows, cols]).unwrap();
        let mut rc = rec();
        cross_entropy(&mut rc, &lt, &tt, &out, Some(&dl), IGNORE_INDEX, 2.0).unwrap();
        rc.submit().unwrap();
        let (loss, count, d) = r::cross_entropy(&logits, &targets, cols, IGNORE_INDEX, 2.0);
        close("ce loss,count", &down(&out), &[loss, count], 1e-5, 1e-5);
        close("ce dlogits", &down(&dl), &d, 1e-7, 1e-5);
        if count > 0.0 {
            fd_check("ce reference", &logits, &d, 16, |x| {
                2.0 * r::cross_entropy(x, &targets, cols, IGNORE_INDEX, 1.0).0
            });
        }
    }
}

#[test]
fn cross_entropy_all_ignored_is_zero() {
    let lt = up_shape(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let tt = gpu().from_u32(&[IGNORE_INDEX, IGNORE_INDEX], &[2]).unwrap();
    let out = up(&[7.0, 7.0]);
    let dl = up_shape(&[7.0; 4], &[2, 2]);
    let mut rc = rec();
    cross_entropy(&mut rc, &lt, &tt, &out, Some(&dl), IGNORE_INDEX, 1.0).unwrap();
    rc.submit().unwrap();
    assert_eq!(down(&out), vec![0.0, 0.0]);
    assert_eq!(down(&dl), vec![0.0; 4]);
}

//! An optimizer as a user names it — a method and the options the command line, a config or
//! experiment file, or the web page gives — and the [`Base`] and [`Method`] it stands for, with
//! tram.md's defaults for every option left out. The one place optimizer names are read.

use super::{Base, KlNorm, Method, Schedule, TramRef};
use crate::error::{Error, Result};
use crate::ops::kl::KlKind;

/// The optimizer names [`OptimSpec::optimizer`] takes, in the order they are listed.
pub const METHOD_NAMES: [&str; 13] = [
    "adamw",
    "sgd",
    "sam",
    "asam",
    "fsam",
    "tram-x",
    "tram-prev",
    "tram-init",
    "tram-ema",
    "tram-fisher",
    "r3f",
    "trpo",
    "mesa",
];

/// A method name and its options (`None`: the method's default). Options are named by their
/// command-line flags in errors.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimSpec {
    /// One of [`METHOD_NAMES`].
    pub optimizer: String,
    /// The base of the sharpness / trust-region methods: `adamw` or `sgd`.
    pub base: String,
    pub rho: Option<f32>,
    pub eta: Option<f32>,
    pub gamma: Option<f32>,
    pub noise_std: Option<f32>,
    /// `normal` or `uniform`.
    pub noise_type: Option<String>,
    /// `forward`, `reverse` or `symmetric`.
    pub kl_type: Option<String>,
    /// `mean` or `reference-code`.
    pub kl_norm: Option<String>,
    pub tr_scale: Option<f32>,
    pub ema_decay: Option<f32>,
    pub lambda: Option<f32>,
    pub no_adaptive: bool,
    pub weight_decay: f32,
    pub momentum: f32,
}

impl OptimSpec {
    /// `optimizer` with every option at its default (AdamW base, no weight decay, SGD momentum
    /// 0.9).
    pub fn named(optimizer: &str) -> Self {
        OptimSpec {
            optimizer: optimizer.to_string(),
            base: "adamw".into(),
            rho: None,
            eta: None,
            gamma: None,
            noise_std: None,
            noise_type: None,
            kl_type: None,
            kl_norm: None,
            tr_scale: None,
            ema_decay: None,
            lambda: None,
            no_adaptive: false,
            weight_decay: 0.0,
            momentum: 0.9,
        }
    }

    /// The base and method this stands for. An option the chosen method does not use is
    /// refused (a misplaced key would otherwise be ignored without a word), as is any unknown
    /// name.
    pub fn build(&self) -> Result<(Base, Method)> {
        let bad = |name: &'static str, value: &str, expected: &str| Error::BadSetting {
            name,
            value: value.to_string(),
            expected: expected.to_string(),
        };
        // A method option must belong to the chosen optimizer: one given to another (a misplaced
        // key in a config or experiment file) would otherwise be ignored without a word.
        let users: [(&'static str, bool, &[&str]); 11] = [
            ("--rho", self.rho.is_some(), &["sam", "asam"]),
            ("--eta", self.eta.is_some(), &["asam", "fsam", "tram-fisher"]),
            ("--gamma", self.gamma.is_some(), &["fsam", "tram-fisher"]),
            ("--noise-std", self.noise_std.is_some(), &["tram-x", "tram-fisher", "r3f"]),
            ("--noise-type", self.noise_type.is_some(), &["tram-x", "tram-fisher", "r3f"]),
            ("--kl-type", self.kl_type.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema", "r3f"]),
            ("--kl-norm", self.kl_norm.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
            ("--tr-scale", self.tr_scale.is_some(), &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
            ("--no-adaptive", self.no_adaptive, &["tram-x", "tram-prev", "tram-init", "tram-ema"]),
            ("--ema-decay", self.ema_decay.is_some(), &["tram-ema", "mesa"]),
            ("--lambda", self.lambda.is_some(), &["r3f", "trpo", "mesa"]),
        ];
        for (name, given, by) in users {
            if given && !by.contains(&self.optimizer.as_str()) {
                return Err(bad(
                    "--optimizer",
                    &self.optimizer,
                    &format!(
                        "an optimizer that uses {name} ({}), or no {name}: it would have no effect",
                        by.join(", ")
                    ),
                ));
            }
        }
        let (gamma, noise_std, lambda) =
            (self.gamma.unwrap_or(0.1), self.noise_std.unwrap_or(0.1), self.lambda.unwrap_or(0.1));
        let uniform = match self.noise_type.as_deref().unwrap_or("normal") {
            "normal" => false,
            "uniform" => true,
            v => return Err(bad("--noise-type", v, "normal or uniform")),
        };
        let kl = |default: KlKind| -> Result<KlKind> {
            Ok(match self.kl_type.as_deref() {
                None => default,
                Some("forward") => KlKind::Forward,
                Some("reverse") => KlKind::Reverse,
                Some("symmetric") => KlKind::Symmetric,
                Some(v) => return Err(bad("--kl-type", v, "forward, reverse or symmetric")),
            })
        };
        let kl_norm = match self.kl_norm.as_deref().unwrap_or("mean") {
            "mean" => KlNorm::Mean,
            "reference-code" | "reference_code" => KlNorm::ReferenceCode,
            v => return Err(bad("--kl-norm", v, "mean or reference-code")),
        };
        let tram = |reference| -> Result<Method> {
            Ok(Method::Tram {
                reference,
                adaptive: !self.no_adaptive,
                kl: kl(KlKind::Forward)?,
                kl_norm,
                tr_scale: self.tr_scale.unwrap_or(1.0),
            })
        };
        let sgd = Base::Sgd { momentum: self.momentum, nesterov: false, weight_decay: self.weight_decay };
        let adamw = Base::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: self.weight_decay };
        let mut base = match self.base.as_str() {
            "adamw" => adamw,
            "sgd" => sgd,
            v => return Err(bad("--base", v, "adamw or sgd")),
        };
        let method = match self.optimizer.as_str() {
            "adamw" => {
                base = adamw;
                Method::Plain
            }
            "sgd" => {
                base = sgd;
                Method::Plain
            }
            "sam" => Method::Sam { rho: self.rho.unwrap_or(0.05) },
            "asam" => Method::Asam { rho: self.rho.unwrap_or(0.5), eta: self.eta.unwrap_or(0.0) },
            "fsam" => Method::Fsam { gamma, eta: self.eta.unwrap_or(0.1) },
            "tram-x" => tram(TramRef::Noise { std: noise_std, uniform })?,
            "tram-prev" => tram(TramRef::Params { ema_decay: 0.0 })?,
            "tram-init" => tram(TramRef::Params { ema_decay: 1.0 })?,
            "tram-ema" => match self.ema_decay {
                Some(d) if (0.0..=1.0).contains(&d) => tram(TramRef::Params { ema_decay: d })?,
                Some(d) => return Err(bad("--ema-decay", &d.to_string(), "a value in [0, 1]")),
                None => return Err(bad("--ema-decay", "", "a value in [0, 1]: tram-ema needs one")),
            },
            "tram-fisher" => Method::TramFisher { gamma, eta: self.eta.unwrap_or(0.1), std: noise_std, uniform },
            "r3f" => Method::R3f { lambda, std: noise_std, uniform, kl: kl(KlKind::Symmetric)? },
            "trpo" => Method::TrustRegion { lambda, ema_decay: 0.0 },
            "mesa" => Method::TrustRegion { lambda, ema_decay: self.ema_decay.unwrap_or(0.999) },
            v => return Err(bad(
                "--optimizer",
                v,
                "adamw, sgd, sam, asam, fsam, tram-x, tram-prev, tram-init, tram-ema, tram-fisher, r3f, trpo or mesa",
            )),
        };
        Ok((base, method))
    }
}

impl Method {
    /// The optimizer `name` (one of [`METHOD_NAMES`]) with every option at its default, and the
    /// base that takes its steps (`tram-ema` with an EMA decay of 0.99, which the command line
    /// asks for).
    pub fn preset(name: &str) -> Result<(Base, Method)> {
        let mut spec = OptimSpec::named(name);
        if name == "tram-ema" {
            spec.ema_decay = Some(0.99);
        }
        spec.build()
    }
}

impl Schedule {
    /// The schedule `name` (constant, linear, cosine or polynomial) with `warmup` steps of
    /// linear warmup over a run of `total` steps.
    pub fn named(name: &str, warmup: u64, total: u64) -> Result<Schedule> {
        Ok(match name {
            "constant" => Schedule::Constant,
            "linear" => Schedule::Linear { warmup, total },
            "cosine" => Schedule::Cosine { warmup, total },
            "polynomial" => Schedule::Polynomial { warmup, total, power: 1.0 },
            v => {
                return Err(Error::BadSetting {
                    name: "--schedule",
                    value: v.to_string(),
                    expected: "constant, linear, cosine or polynomial".into(),
                })
            }
        })
    }
}

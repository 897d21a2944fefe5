// The browser test (run by web/test.sh): serve the repository, open web/index.html in headless
// Chromium with WebGPU, run web/scenario.json's checks in the page through the wasm package's
// JavaScript API, and compare them with the native run of the same scenario (web-reference):
//   - real all-MiniLM-L6-v2 sentence embeddings: cosine similarity >= 0.9999 per sentence;
//   - a one-layer MiniLM fine-tuned 3 steps each with AdamW, SAM and TRAM-x, and one step of the
//     full 6-layer MiniLM with TRAM-x: every step's loss within 1e-4 relative, TRAM's d finite,
//     positive and within 2e-2 relative (d is a KL of nearly equal outputs: a difference of
//     nearly equal numbers, so rounding differences between two GPUs are magnified), the gradient
//     norm within 1e-3 relative, the final class probabilities within 1e-3;
//   - then the demo itself, clicked as a user would (load, train with TRAM-x, classify), and a
//     screenshot of the page after training;
//   - no console errors and no page errors throughout.
//
//   node web/test.mjs REFERENCE.json OUT_DIR
import { createRequire } from 'node:module';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const [refPath, outDir] = process.argv.slice(2);
if (!refPath || !outDir) {
  console.error('usage: node web/test.mjs REFERENCE.json OUT_DIR');
  process.exit(2);
}
const npmDir = process.env.TRAMWAY_NPM ?? path.join(process.env.HOME, '.cache/tramway/npm');
const { chromium } = createRequire(path.join(npmDir, 'package.json'))('playwright-core');
const reference = JSON.parse(fs.readFileSync(refPath, 'utf8'));
const scenario = JSON.parse(fs.readFileSync(path.join(here, 'scenario.json'), 'utf8'));
fs.mkdirSync(outDir, { recursive: true });

// ---- a static file server over the repository (what `python3 -m http.server` does) ----
const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.png': 'image/png' };
const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const file = path.join(root, path.normalize(url));
  if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404).end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}`;

const failures = [];
function check(ok, what) {
  if (!ok) failures.push(what);
  return ok;
}
/// |a - b| <= tol * max(|a|, |b|), failing on NaN, infinities and missing values.
function close(a, b, tol, what) {
  const ok = Number.isFinite(a) && Number.isFinite(b) && Math.abs(a - b) <= tol * Math.max(Math.abs(a), Math.abs(b));
  return check(ok, `${what}: browser ${a}, native ${b} (relative tolerance ${tol})`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader'],
});
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1020, height: 1400 } });
  const consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
    if (process.env.TRAMWAY_WEB_VERBOSE) console.log(`[page] ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
  await page.goto(`${base}/web/index.html`);
  await page.waitForFunction(() => window.tramwayReady === true || document.getElementById('status').className === 'error',
    null, { timeout: 120_000 });
  const startStatus = await page.textContent('#status');
  if (!check(await page.evaluate(() => window.tramwayReady === true), `the page did not start: ${startStatus}`)) {
    throw new Error(startStatus);
  }

  // ---- the scenario, against the native reference ----
  const t0 = Date.now();
  const got = await page.evaluate((sc) => window.runScenario(sc), scenario);
  console.log(`browser adapter: ${got.adapter}; scenario took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  check(got.embed.length === reference.embed.length, `embeddings: ${got.embed.length} rows, native ${reference.embed.length}`);
  got.embed.forEach((e, i) => {
    const r = reference.embed[i] ?? [];
    check(e.length === r.length && e.length > 0, `embedding ${i}: length ${e.length}, native ${r.length}`);
    let dot = 0, ne = 0, nr = 0;
    e.forEach((v, k) => { dot += v * r[k]; ne += v * v; nr += r[k] * r[k]; });
    const cos = dot / Math.sqrt(ne * nr);
    console.log(`embedding ${i}: cosine to native ${cos.toFixed(7)}`);
    check(cos >= 0.9999, `embedding ${i} ("${scenario.embed.sentences[i]}"): cosine to native ${cos} < 0.9999`);
  });
  for (const part of ['small', 'real']) {
    for (const opt of scenario[part].optimizers) {
      const g = got[part][opt], r = reference[part][opt];
      if (!check(g && r && g.steps.length === r.steps.length && g.steps.length === scenario[part].steps,
        `${part}/${opt}: ${g?.steps.length} steps, native ${r?.steps.length}, scenario ${scenario[part].steps}`)) continue;
      g.steps.forEach((s, k) => {
        const n = r.steps[k], at = `${part}/${opt} step ${k + 1}`;
        console.log(`${at}: loss ${s.loss.toFixed(6)} (native ${n.loss.toFixed(6)}), d ${s.d.toExponential(4)} ` +
          `(native ${n.d.toExponential(4)}), |g| ${s.gradNorm.toFixed(5)} (native ${n.gradNorm.toFixed(5)})`);
        close(s.loss, n.loss, 1e-4, `${at} loss`);
        close(s.gradNorm, n.gradNorm, 1e-3, `${at} gradient norm`);
        if (opt.startsWith('tram')) {
          check(Number.isFinite(s.d) && s.d > 0, `${at}: TRAM's d ${s.d} is not finite and positive`);
          close(s.d, n.d, 2e-2, `${at} d`);
        }
      });
      const gp = g.probs.flat(), rp = r.probs.flat();
      check(gp.length === rp.length, `${part}/${opt} probabilities: ${gp.length} values, native ${rp.length}`);
      gp.forEach((p, i) => check(Number.isFinite(p) && Math.abs(p - rp[i]) <= 1e-3,
        `${part}/${opt} probability ${i}: browser ${p}, native ${rp[i]}`));
    }
  }

  // ---- the demo as a user clicks it: train MiniLM with TRAM-x (the page's defaults), classify ----
  await page.selectOption('#optimizer', 'tram-x');
  await page.fill('#steps', '8');
  await page.click('#train');
  await page.waitForFunction(() => /training done|failed/.test(document.getElementById('status').textContent),
    null, { timeout: 600_000 });
  const trained = await page.textContent('#status');
  console.log(`demo: ${trained.replace(/\n/g, ' | ')}`);
  check(/training done/.test(trained) && !/NaN/.test(trained), `the demo's training: ${trained}`);
  const hist = await page.evaluate(() => window.demoHistory);
  console.log(`demo losses: ${hist.map((m) => m.loss.toFixed(3)).join(' ')}`);
  check(hist.length === 8 && hist.every((m) => Number.isFinite(m.loss) && m.d > 0) && hist[7].loss < 0.9 * hist[0].loss,
    `the demo's 8 TRAM-x steps: losses ${hist.map((m) => m.loss)} should fall by 10 % with d > 0`);
  await page.click('#classify');
  await page.waitForFunction(() => /classified|failed/.test(document.getElementById('status').textContent),
    null, { timeout: 120_000 });
  const classified = await page.textContent('#status');
  check(/classified: (positive|negative)/.test(classified), `the demo's classification: ${classified}`);
  const shot = path.join(outDir, 'page.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  check(consoleErrors.length === 0, `console errors:\n  ${consoleErrors.join('\n  ')}`);
  fs.writeFileSync(path.join(outDir, 'browser.json'), JSON.stringify(got));
} catch (e) {
  failures.push(`the test stopped: ${e.stack ?? e}`);
} finally {
  await browser.close();
  server.close();
}
if (failures.length) {
  console.error(`web test FAILED (${failures.length}):\n- ${failures.join('\n- ')}`);
  code = 1;
} else {
  console.log('web test passed: the browser matches native');
}
process.exit(code);

// The dashboard in a real browser (Debian's chromium through playwright-core), against a
// daemon tests/it/dashboard.rs started: sign in, deploy staging, switch the production domain
// to staging and back (checking through the proxy, over real HTTP, where traffic goes), reseed
// a test environment, cancel a running job; a viewer sees no actions and a forged post of
// theirs is refused. Every page is checked with axe-core (no serious or critical violation)
// and the main ones are saved as screenshots. One JSON line per check on stdout; exits 1 on
// the first failure.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import http from "node:http";
import path from "node:path";

const require = createRequire(import.meta.url);
const AXE = require.resolve("axe-core/axe.min.js");
const ui = process.env.TURNOUT_UI;
const [proxyHost, proxyPort] = process.env.PROXY.split(":");
const domain = process.env.DOMAIN;
const shots = process.env.SCREENSHOTS;

const say = (o) => console.log(JSON.stringify(o));
function check(ok, what) {
  if (!ok) throw new Error("check failed: " + what);
  say({ ok: what });
}

/** Which environment answers for `host` through the proxy (the app says its TURNOUT_ENV). */
function behind(host) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: proxyHost, port: Number(proxyPort), path: "/env/TURNOUT_ENV", headers: { Host: host } },
      (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => (res.statusCode === 200 ? resolve(body.trim()) : reject(new Error(`${host}: ${res.statusCode} ${body}`))));
      },
    );
    req.on("error", reject);
  });
}

async function axe(page, name) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  say({ axe: name, violations: result.violations.map((v) => `${v.impact}: ${v.id}`) });
  if (bad.length) {
    throw new Error(`${name}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`).join("; ")}`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
}

/** Wait until the job page the browser is on says its job ended; returns its final state. */
async function jobEnd(page, timeout = 90000) {
  await page.waitForFunction(() => document.body.dataset.jobEnded, null, { timeout });
  return page.evaluate(() => document.body.dataset.jobEnded);
}

async function signIn(context, token) {
  const page = await context.newPage();
  await page.goto(`${ui}/ui/login`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${ui}/ui/apps`);
  return page;
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  // axe-core is added to each page as a script; the pages' CSP would (rightly) refuse it.
  const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 800 } });
  const login = await context.newPage();
  await login.goto(`${ui}/ui/login`);
  await axe(login, "sign in");
  await shot(login, "sign-in");
  await login.close();

  const page = await signIn(context, process.env.OWNER_TOKEN);
  await axe(page, "apps");
  await page.getByRole("link", { name: "shop" }).click();
  await page.waitForURL(`${ui}/ui/apps/shop`);
  await axe(page, "pipeline");
  await shot(page, "pipeline");

  // Deploy staging, and watch the job to its end.
  await page.getByRole("button", { name: "Deploy staging" }).click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  check((await jobEnd(page)) === "succeeded", "the staging deploy succeeded");
  await axe(page, "job");
  await shot(page, "job");

  // Domains → Edit → pick staging → Update: traffic moves; Rollback: it comes back.
  await page.getByRole("link", { name: "Domains" }).click();
  await axe(page, "domains");
  check((await behind(domain)) === "prod", `${domain} is served by prod`);
  await page.getByRole("link", { name: `Edit ${domain}` }).click();
  const select = page.getByLabel(`Environment for ${domain}`);
  await select.selectOption("staging");
  await axe(page, "domain edit");
  await shot(page, "domain-edit");
  await page.getByRole("button", { name: "Update" }).click();
  await page.getByRole("status").filter({ hasText: "switch from prod to staging" }).waitFor();
  check((await behind(domain)) === "staging", `${domain} moved to staging`);
  await shot(page, "domains");
  await page.getByRole("button", { name: `Rollback ${domain}` }).click();
  await page.getByRole("status").filter({ hasText: "rollback from staging to prod" }).waitFor();
  check((await behind(domain)) === "prod", `${domain} rolled back to prod`);
  await page.getByRole("link", { name: `History of ${domain}` }).click();
  await axe(page, "domain history");

  // Reseed the test environment from its page.
  await page.goto(`${ui}/ui/apps/shop/envs/test`);
  await axe(page, "environment");
  await shot(page, "environment");
  await page.getByRole("button", { name: "Reseed" }).click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  check((await jobEnd(page)) === "succeeded", "the reseed of test succeeded");

  // A clone started from the jobs page: staging's data into the test environment.
  await page.getByRole("link", { name: "Jobs" }).click();
  await page.getByLabel("Environment", { exact: true }).selectOption("shop/test");
  await page.getByLabel("Job", { exact: true }).selectOption("clone");
  await page.getByLabel("Ref, environment or snapshot").fill("staging");
  await page.getByRole("button", { name: "Start job" }).click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  check((await jobEnd(page)) === "succeeded", "the clone from staging into test succeeded");

  // A deploy whose build takes a minute, cancelled from its page while it runs.
  await page.goto(`${ui}/ui/apps/shop/envs/slow`);
  await page.getByRole("button", { name: "Deploy" }).click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  await page.locator("#step-2 .step-state", { hasText: "running" }).waitFor({ timeout: 60000 });
  await page.getByRole("button", { name: /^Cancel job/ }).click();
  await page.waitForURL(/\/ui\/jobs\/\d+$/);
  check((await jobEnd(page, 60000)) === "cancelled", "the slow deploy was cancelled");

  for (const [name, url] of [["jobs", "/ui/jobs"], ["certificates", "/ui/certificates"], ["audit", "/ui/audit?app=shop"]]) {
    await page.goto(`${ui}${url}`);
    await axe(page, name);
    if (name !== "certificates") await shot(page, name);
  }

  // A viewer: no action anywhere (a list's Filter only narrows what a GET shows), and a forged
  // form post is refused.
  const viewerContext = await browser.newContext({ bypassCSP: true });
  const viewer = await signIn(viewerContext, process.env.VIEWER_TOKEN);
  for (const url of ["/ui/apps/shop", "/ui/domains", "/ui/apps/shop/envs/test", `/ui/domains/${domain}`, "/ui/jobs"]) {
    await viewer.goto(`${ui}${url}`);
    const buttons = await viewer.getByRole("button").allTextContents();
    check(buttons.every((b) => ["Sign out", "Filter"].includes(b.trim())), `a viewer sees no action on ${url} (${buttons.join(", ")})`);
  }
  await viewer.goto(`${ui}/ui/apps/shop`);
  await axe(viewer, "pipeline (viewer)");
  const csrf = await viewer.locator('input[name="_csrf"]').first().inputValue();
  const forged = await viewerContext.request.post(`${ui}/ui/domains/${domain}/switch`, {
    form: { env: "staging", _csrf: csrf },
    maxRedirects: 0,
  });
  check(forged.status() === 403, `a viewer's switch is refused (${forged.status()})`);
  const tokenless = await viewerContext.request.post(`${ui}/ui/domains/${domain}/rollback`, { maxRedirects: 0 });
  check(tokenless.status() === 403, `a post without the CSRF token is refused (${tokenless.status()})`);
  check((await behind(domain)) === "prod", `${domain} still served by prod`);
  say({ done: true });
} catch (e) {
  say({ failed: String(e && e.stack ? e.stack : e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}

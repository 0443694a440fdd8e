// Loads peregrine's API reference page (`/docs/`) in Debian's headless Chromium and checks
// that every request the page makes goes to the server and succeeds, that it lists every
// operation of /openapi.json, and that "Try it out" on POST /api/v1/users gets 201.
// Saves a screenshot of the page after that call.
//
// Usage: NODE_PATH=DIR/node_modules node docs_page.cjs BASE_URL SCREENSHOT.png [TOKEN]
// BASE_URL is a server on loopback, such as http://127.0.0.1:8080. With TOKEN, a bearer token
// that may create users, the page's "Authorize" dialog is given the token first.
"use strict";

const { chromium } = require("playwright-core");

const [base, screenshotPath, token] = process.argv.slice(2);
if (!base || !screenshotPath) {
  console.error("usage: node docs_page.cjs BASE_URL SCREENSHOT.png [TOKEN]");
  process.exit(2);
}
const origin = new URL(base).origin;
// Upper bound on each page step, so a page that never settles fails instead of hanging.
const STEP_TIMEOUT_MS = 20000;

async function main() {
  const document = await (await fetch(`${origin}/openapi.json`)).json();
  const operations = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      operations.push({ method, path, tag: operation.tags[0], id: operation.operationId });
    }
  }

  // Chromium's sandbox needs an unprivileged user namespace, which root in a container lacks.
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const problems = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 2000 } });
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on("request", (request) => {
      const url = request.url();
      if (!url.startsWith(`${origin}/`) && !url.startsWith("data:")) {
        problems.push(`request to another origin: ${request.method()} ${url}`);
      }
    });
    page.on("requestfailed", (request) => {
      problems.push(`failed request: ${request.method()} ${request.url()}: ${request.failure().errorText}`);
    });
    page.on("response", (response) => {
      if (response.status() >= 400) {
        problems.push(`error response: ${response.status()} ${response.request().method()} ${response.url()}`);
      }
    });
    page.on("pageerror", (error) => problems.push(`script error: ${error.message}`));

    await page.goto(`${origin}/docs`, { waitUntil: "networkidle" });
    await page.locator(".opblock").first().waitFor();

    const missing = [];
    for (const operation of operations) {
      const selector = `#operations-${operation.tag}-${operation.id}`;
      if ((await page.locator(selector).count()) !== 1) {
        missing.push(`${operation.method.toUpperCase()} ${operation.path} (${selector})`);
      }
    }
    console.log(`operations listed: ${operations.length - missing.length} of ${operations.length}`);
    for (const operation of missing) {
      problems.push(`operation not listed: ${operation}`);
    }

    if (token) {
      await page.locator(".auth-wrapper button.authorize").click();
      const dialog = page.locator(".modal-ux");
      await dialog.locator("input").first().fill(token);
      await dialog.locator("button.modal-btn.authorize").click();
      await dialog.locator("button.btn-done").click();
    }

    const create = page.locator("#operations-users-create_user");
    await create.locator(".opblock-summary").click();
    const email = `docs-page-${Date.now()}@example.com`;
    await create.locator("textarea.body-param__text").fill(
      JSON.stringify({ name: "Docs Page", email }),
    );
    const [response] = await Promise.all([
      page.waitForResponse(
        (candidate) =>
          candidate.url() === `${origin}/api/v1/users` && candidate.request().method() === "POST",
      ),
      create.locator("button.execute").click(),
    ]);
    console.log(`try it out: POST /api/v1/users returned ${response.status()}`);
    if (response.status() !== 201) {
      problems.push(`try it out: POST /api/v1/users returned ${response.status()}, expected 201`);
    }
    const statusCell = create.locator(".live-responses-table tbody .response-col_status").first();
    await statusCell.waitFor();
    const shownStatus = (await statusCell.innerText()).trim();
    if (shownStatus !== "201") {
      problems.push(`try it out: the page shows status ${shownStatus}, expected 201`);
    }

    await page.screenshot({ path: screenshotPath, fullPage: true });
    console.log(`screenshot: ${screenshotPath}`);
  } finally {
    await browser.close();
  }

  if (problems.length > 0) {
    for (const problem of problems) {
      console.error(problem);
    }
    console.error(`docs_page.cjs: ${problems.length} problem(s)`);
    process.exit(1);
  }
  console.log("docs page: no failed request, every operation listed, try it out returned 201");
}

main().catch((error) => {
  console.error(`docs_page.cjs: ${error.stack || error}`);
  process.exit(1);
});

// Builds one of this folder's components with componentize-js:
//
//   node build.mjs processor   # processor.js, world subscriber-component of ../../wit
//   node build.mjs api         # api.js, world order-api of wit/order-api.wit
//
// The API's world exports wasi:http/incoming-handler@0.2.10, the version the
// runtime inside componentize-js implements. jco ships the WASI 0.2 WIT
// packages at 0.2.12 (the version package-lock.json pins is 1.35.0), whose
// 0.2 interfaces are the same, so they are copied
// under ../../target/orders-js-wit with their version set to 0.2.10.

import { componentize } from "@bytecodealliance/componentize-js";
import { existsSync } from "node:fs";
import { cp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const out = join(root, "target/wasm32-wasip2/release");
const WASI_FROM = "0.2.12";
const WASI_TO = "0.2.10";

async function apiWit() {
  const jco = join(here, "node_modules/@bytecodealliance/jco");
  const wasi = join(jco, "lib/wit/builtin", WASI_FROM);
  if (!existsSync(wasi)) {
    throw new Error(`${wasi} is missing: run \`npm ci\` here (or \`make setup-guests\`) to install the pinned packages`);
  }
  const dir = join(root, "target/orders-js-wit");
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, "deps"), { recursive: true });
  await cp(join(here, "wit/order-api.wit"), join(dir, "order-api.wit"));
  await cp(join(root, "wit"), join(dir, "deps/hostbridge"), { recursive: true });
  for (const pkg of await readdir(wasi)) {
    await mkdir(join(dir, "deps", pkg));
    for (const file of await readdir(join(wasi, pkg))) {
      const text = await readFile(join(wasi, pkg, file), "utf8");
      await writeFile(join(dir, "deps", pkg, file), text.replaceAll(`@${WASI_FROM}`, `@${WASI_TO}`));
    }
  }
  return dir;
}

const targets = {
  processor: async () => ({
    source: "processor.js",
    witPath: join(root, "wit"),
    worldName: "subscriber-component",
    disableFeatures: ["http", "fetch-event"],
    output: "order_processor_js.wasm",
  }),
  api: async () => ({
    source: "api.js",
    witPath: await apiWit(),
    worldName: "order-api",
    disableFeatures: [],
    output: "order_api_js.wasm",
  }),
};

const which = process.argv[2];
if (!targets[which]) {
  console.error(`usage: node build.mjs (${Object.keys(targets).join(" | ")})`);
  process.exit(2);
}
const target = await targets[which]();
const { component } = await componentize({
  sourcePath: join(here, target.source),
  witPath: target.witPath,
  worldName: target.worldName,
  disableFeatures: target.disableFeatures,
});
await mkdir(out, { recursive: true });
await writeFile(join(out, target.output), component);
console.error(`built ${join(out, target.output)} (${(component.length / 1e6).toFixed(1)} MB)`);

// Copies the one runtime file the app takes from npm (Chart.js's UMD build) into web/vendor/,
// so the page loads it from this server at a stable address. Run by `npm run build`
// (scripts/setup.sh does). web/vendor/ is not committed.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const vendor = join(web, "vendor");
mkdirSync(vendor, { recursive: true });

// The source map is not shipped: drop its comment so browsers do not ask for it.
const chart = readFileSync(join(web, "node_modules/chart.js/dist/chart.umd.js"), "utf8");
writeFileSync(join(vendor, "chart.umd.js"), chart.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n"));
copyFileSync(join(web, "node_modules/chart.js/LICENSE.md"), join(vendor, "chart.js-LICENSE.md"));
console.log(`vendored Chart.js into ${vendor}`);

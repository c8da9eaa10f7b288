// Print the licence of every package in the bundle (the runtime dependencies and theirs).
const fs = require("fs");
const path = require("path");
const lock = JSON.parse(fs.readFileSync(path.join(__dirname, "package-lock.json"), "utf8"));
const seen = [];
for (const [key, info] of Object.entries(lock.packages)) {
  if (!key || info.dev) continue;
  const dir = path.join(__dirname, key);
  const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? fs.readFileSync(path.join(dir, file), "utf8") : `License: ${info.license}`;
  seen.push(`==== ${key.replace(/^node_modules\//, "")}@${info.version} (${info.license})\n\n${text.trim()}\n`);
}
process.stdout.write(seen.join("\n"));

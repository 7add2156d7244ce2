// The UI keeps copies of the Python package's shipped data (so this folder builds on its own);
// they must stay byte-for-byte equal to the package's files.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SHIPPED_PCA, SHIPPED_PCA_V2, shippedPca } from "../src/analysis/pca";

const PY_DATA = join(__dirname, "../../../../python/sglang/srt/attention_sidecar/data");
const UI_DATA = join(__dirname, "../src/data");

describe("shipped PCA defaults", () => {
  for (const name of ["pca_interpretation.json", "pca_interpretation_v2.json"]) {
    it(`${name} equals the Python package's copy`, () => {
      expect(readFileSync(join(UI_DATA, name), "utf8")).toBe(readFileSync(join(PY_DATA, name), "utf8"));
    });
  }
  it("picks the defaults of a fingerprint's version", () => {
    expect(shippedPca(2)).toBe(SHIPPED_PCA_V2);
    expect(shippedPca(1)).toBe(SHIPPED_PCA);
    expect(shippedPca()).toBe(SHIPPED_PCA);
    expect(SHIPPED_PCA_V2.mean).not.toEqual(SHIPPED_PCA.mean);
  });
});

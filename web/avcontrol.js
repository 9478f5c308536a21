// AVControl frontend extension: keeps Empty Audio+Video Latent sizes valid while editing
// (frames 8n+1, sides multiples of 32) and shows the clip's duration on the node.
import { app } from "../../scripts/app.js";

const snapFrames = (v) => Math.max(1, Math.round((v - 1) / 8) * 8 + 1);
const snapSide = (v) => Math.max(32, Math.round(v / 32) * 32);

app.registerExtension({
  name: "avcontrol.latentSize",
  nodeCreated(node) {
    if (node.comfyClass !== "AVCEmptyLatent") return;
    const w = (name) => node.widgets?.find((x) => x.name === name);
    const update = () => {
      const frames = w("frames"), fps = w("fps");
      if (!frames || !fps) return;
      const seconds = frames.value / Math.max(fps.value, 1e-6);
      node.title = `Empty Audio+Video Latent (${seconds.toFixed(2)} s)`;
    };
    for (const [name, snap] of [["frames", snapFrames], ["width", snapSide], ["height", snapSide]]) {
      const widget = w(name);
      if (!widget) continue;
      const original = widget.callback;
      widget.callback = function (value, ...rest) {
        const snapped = snap(Number(value));
        if (snapped !== widget.value) widget.value = snapped;
        update();
        return original?.call(this, snapped, ...rest);
      };
    }
    const fps = w("fps");
    if (fps) {
      const original = fps.callback;
      fps.callback = function (...args) { update(); return original?.apply(this, args); };
    }
    update();
  },
});

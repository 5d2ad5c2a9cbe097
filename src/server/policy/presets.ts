// One list of presets: the egress proxy's (it matches them), used here to check names.
export { isPreset, PRESET_NAMES, PRESETS, type PresetName } from '../../runner/network/index.ts';

// vega-lite publishes its types under package.json "exports" only, which this project's
// moduleResolution ("node") does not read: point the bare name at them.
declare module 'vega-lite' {
  export * from 'vega-lite/build/index';
}

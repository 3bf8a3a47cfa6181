export { pipeline } from './pipeline';
export { sftNode, rlStage, selectBudgetNode, evalNode, reportNode, pauseSignal, resumeSignal, progressQuery } from './nodes';
export { ping } from './ping';

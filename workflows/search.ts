/** Search attributes (registered by infra/up) that make runs findable in the Web UI. */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const E3Run = defineSearchAttributeKey('E3Run', SearchAttributeType.KEYWORD);
export const E3Node = defineSearchAttributeKey('E3Node', SearchAttributeType.KEYWORD);
export const E3Iteration = defineSearchAttributeKey('E3Iteration', SearchAttributeType.INT);
export const E3Budget = defineSearchAttributeKey('E3Budget', SearchAttributeType.INT);
export const E3PassAt1 = defineSearchAttributeKey('E3PassAt1', SearchAttributeType.DOUBLE);
export const E3Config = defineSearchAttributeKey('E3Config', SearchAttributeType.KEYWORD);
export const E3Lineage = defineSearchAttributeKey('E3Lineage', SearchAttributeType.KEYWORD);

"""Per-disc findings (Pfirrmann, Modic, endplates, herniation, bulging, narrowing,
spondylolisthesis) learned from real expert gradings, on disc-aligned crops that the node's
own segmentation and level labelling place. Entry point: :class:`models.discs.infer.DiscGrader`.
"""

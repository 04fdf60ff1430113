"""The main job (musicdistill run): the stage runner, the stages, the HTML report."""

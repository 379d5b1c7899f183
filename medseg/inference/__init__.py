"""medseg.inference"""
